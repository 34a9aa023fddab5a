"""Security of the CreateSession path: authentication, rate limits and per-identity session caps.

`Admission` is the one object the runtime needs; the other names are exported for clients (`sign`,
`auth_metadata`) and tests.
"""

from appliance.security.admission import Admission, AudioRateLimiter, Ticket, peer_ip, upload_mode_of
from appliance.security.auth import Authenticator, auth_metadata, hash_api_key, sign
from appliance.security.limiter import KeyedRateLimiter, TokenBucket

__all__ = ["Admission", "AudioRateLimiter", "Authenticator", "KeyedRateLimiter", "Ticket", "TokenBucket",
           "auth_metadata", "hash_api_key", "peer_ip", "sign", "upload_mode_of"]
