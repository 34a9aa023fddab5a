"""Security of the CreateSession path: authentication and rate limits (the per-identity session caps
are counted by the session table, `appliance.session_table`).

`Admission` is the one object the runtime needs; the other names are exported for clients (`sign`,
`auth_metadata`) and tests.
"""

from appliance.security.admission import Admission, AdmissionSlot, AudioRateLimiter, upload_mode_of
from appliance.security.auth import Authenticator, auth_metadata, hash_api_key, sign
from appliance.security.limiter import KeyedRateLimiter, TokenBucket

__all__ = ["Admission", "AdmissionSlot", "AudioRateLimiter", "Authenticator", "KeyedRateLimiter", "TokenBucket",
           "auth_metadata", "hash_api_key", "sign", "upload_mode_of"]
