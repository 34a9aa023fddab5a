"""CreateSession authentication: api keys and HMAC signed tokens, with replay protection.

Owns the decision "who is this caller?" for one CreateSession, from its gRPC metadata and session
attributes. `Authenticator.authenticate` returns the caller's api_key (or None when none was given
and none is required) or raises ERR1004 naming what was wrong. Profiles (`auth.create_session_auth_profile`):

* `none`: no credential, but `auth.require_api_key` or the attribute `api_key_required=true` still
  demand a non-empty `api_key` attribute.
* `api_key`: the `api_key` attribute is required.
* `signed_token`: `authorization: Bearer <sig>` plus `x-stt-auth-ts: <ts>`, or
  `authorization: Bearer <ts>:<sig>`, where `sig` is the lowercase hex HMAC-SHA256 under
  `auth.create_session_auth_secret` of the message `"<ts>"` (ts exactly as sent, unix seconds,
  decimals allowed) or, when the session carries an `api_key` attribute, of `"<ts>:<api_key>"`, so
  a token is bound to the caller's key and cannot be reused with another key.
  `auth.create_session_auth_ttl_sec` > 0 bounds |now - ts|; each signature is accepted once
  (remembered until it would expire anyway, or LRU-bounded when the TTL is 0).

When `allowed_api_keys` (sha256 hex digests) is given, a presented key must be in it; otherwise any
non-empty key of the accepted shape (1-256 visible ASCII characters) passes. `now` is wall-clock
unix seconds (time.time()), the clock clients sign with.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from appliance.config import AuthConfig
from appliance.errors import ApplianceError

__all__ = ["AUTH_TS_HEADER", "Authenticator", "auth_metadata", "hash_api_key", "sign"]

AUTH_HEADER = "authorization"
AUTH_TS_HEADER = "x-stt-auth-ts"
API_KEY_ATTR = "api_key"
API_KEY_REQUIRED_ATTR = "api_key_required"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
API_KEY_RE = re.compile(r"[\x21-\x7e]{1,256}")
SIG_RE = re.compile(r"[0-9a-f]{64}")
TS_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
DEFAULT_REPLAY_MAX_ENTRIES = 65_536


def hash_api_key(api_key: str) -> str:
    """sha256 hex digest of a key: the form `allowed_api_keys` holds (never the key itself)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _message(ts: str, api_key: str | None) -> str:
    return f"{ts}:{api_key}" if api_key else f"{ts}"


def sign(secret: str, ts: float | int | str, api_key: str | None = None) -> str:
    """Hex HMAC-SHA256 of `"<ts>"` (or `"<ts>:<api_key>"`); send `ts` exactly as formatted here."""
    return hmac.new(secret.encode("utf-8"), _message(str(ts), api_key).encode("utf-8"),
                    hashlib.sha256).hexdigest()


def auth_metadata(secret: str, api_key: str | None = None, now: float | None = None) -> list[tuple[str, str]]:
    """gRPC metadata for a signed-token CreateSession. The ts carries microseconds so two sessions
    opened in the same second get distinct signatures (each signature is accepted once)."""
    ts = f"{time.time() if now is None else now:.6f}"
    return [(AUTH_HEADER, f"Bearer {sign(secret, ts, api_key)}"), (AUTH_TS_HEADER, ts)]


def _refuse(message: str) -> ApplianceError:
    return ApplianceError("ERR1004", message)


class ReplayMemoryFull(Exception):
    """Every remembered signature is still unexpired: forgetting one would let it be replayed."""

    def __init__(self, retry_after_sec: float):
        super().__init__(retry_after_sec)
        self.retry_after_sec = retry_after_sec


class _ReplayStore:
    """Signatures already used, each kept until its expiry (unix sec, inf when TTL is 0).

    Bounded by `max_entries`. With a TTL, an unexpired signature is never forgotten: when the memory
    is full of them a new signature is refused until the oldest expires (fail closed). Without a TTL
    (0) nothing expires, so the oldest are evicted (LRU) — the documented cost of turning TTL off."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._expires_at: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._last_sweep_at = -math.inf

    def __len__(self) -> int:
        return len(self._expires_at)

    def check_and_add(self, sig: str, expires_at: float, now: float) -> bool:
        """True the first time `sig` is seen (and remembers it), False on a replay."""
        with self._lock:
            old = self._expires_at.get(sig)
            if old is not None and old >= now:
                return False
            if len(self._expires_at) >= self.max_entries and now - self._last_sweep_at >= 1.0:
                self._last_sweep_at = now  # at most one O(n) sweep per second
                for key in [k for k, exp in self._expires_at.items() if exp < now]:
                    del self._expires_at[key]
            if len(self._expires_at) >= self.max_entries and math.isfinite(expires_at):
                soonest = min(self._expires_at.values())
                if soonest >= now:
                    raise ReplayMemoryFull(max(0.1, soonest - now))
            self._expires_at[sig] = expires_at
            self._expires_at.move_to_end(sig)
            while len(self._expires_at) > self.max_entries:
                self._expires_at.popitem(last=False)
            return True


class Authenticator:
    """Applies one AuthConfig to CreateSession calls. Thread-safe; one instance per server."""

    def __init__(self, config: AuthConfig, *, allowed_api_keys: Iterable[str] | None = None,
                 replay_max_entries: int = DEFAULT_REPLAY_MAX_ENTRIES):
        self.config = config
        self.profile = config.create_session_auth_profile
        if self.profile == "signed_token" and not config.create_session_auth_secret:
            raise ValueError("auth.create_session_auth_profile is 'signed_token' but "
                             "auth.create_session_auth_secret is empty; set a secret")
        self._secret = config.create_session_auth_secret.encode("utf-8")
        self.ttl_sec = float(config.create_session_auth_ttl_sec)
        self.allowed_api_keys = (frozenset(h.lower() for h in allowed_api_keys)
                                 if allowed_api_keys is not None else None)
        self._replays = _ReplayStore(replay_max_entries)

    def authenticate(self, metadata: Mapping[str, str], attributes: Mapping[str, str],
                     now: float | None = None) -> str | None:
        """The caller's api_key (None when absent and not required); raises ERR1004 otherwise."""
        now = time.time() if now is None else now
        api_key = self._api_key(attributes)
        if self.profile == "signed_token":
            self._check_signed_token({k.lower(): v for k, v in metadata.items()}, api_key, now)
        return api_key

    def _api_key(self, attributes: Mapping[str, str]) -> str | None:
        api_key = attributes.get(API_KEY_ATTR) or None
        required = (self.config.require_api_key or self.profile == "api_key"
                    or str(attributes.get(API_KEY_REQUIRED_ATTR, "")).strip().lower() in TRUE_WORDS)
        if api_key is None:
            if required:
                raise _refuse("missing api_key attribute; this server requires a non-empty api_key "
                              "on CreateSession")
            return None
        if not API_KEY_RE.fullmatch(api_key):
            raise _refuse(f"malformed api_key attribute ({len(api_key)} chars); expected 1-256 visible "
                          "ASCII characters without spaces")
        if self.allowed_api_keys is not None and hash_api_key(api_key) not in self.allowed_api_keys:
            raise _refuse("unknown api_key; the key is not in the server's key list")
        return api_key

    def _check_signed_token(self, metadata: Mapping[str, str], api_key: str | None, now: float) -> None:
        header = metadata.get(AUTH_HEADER, "").strip()
        scheme, _, token = header.partition(" ")
        if not header:
            raise _refuse("missing authorization metadata; expected 'Bearer <sig>' with x-stt-auth-ts, "
                          "or 'Bearer <ts>:<sig>'")
        if scheme.lower() != "bearer" or not token.strip():
            raise _refuse("malformed authorization metadata; expected 'Bearer <sig>' or 'Bearer <ts>:<sig>'")
        token = token.strip()
        if ":" in token:
            ts, _, sig = token.partition(":")
        else:
            ts, sig = metadata.get(AUTH_TS_HEADER, "").strip(), token
            if not ts:
                raise _refuse(f"missing {AUTH_TS_HEADER} metadata; send it with 'Bearer <sig>' or use "
                              "'Bearer <ts>:<sig>'")
        if not TS_RE.fullmatch(ts):
            raise _refuse(f"malformed auth ts {ts[:32]!r}; expected unix seconds, e.g. '1700000000' "
                          "or '1700000000.25'")
        sig = sig.lower()
        if not SIG_RE.fullmatch(sig):
            raise _refuse(f"malformed signature ({len(sig)} chars); expected 64 hex chars of HMAC-SHA256")
        expected = hmac.new(self._secret, _message(ts, api_key).encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig):
            bound = " and the api_key attribute ('<ts>:<api_key>')" if api_key else ""
            raise _refuse(f"bad signature; expected HMAC-SHA256 of the ts{bound} under the shared secret")
        ts_sec = float(ts)
        if self.ttl_sec > 0:
            if now - ts_sec > self.ttl_sec:
                raise _refuse(f"expired signed token: ts is {now - ts_sec:.0f} s old, "
                              f"create_session_auth_ttl_sec={self.ttl_sec:g}")
            if ts_sec - now > self.ttl_sec:
                raise _refuse(f"signed token ts is {ts_sec - now:.0f} s in the future, beyond "
                              f"create_session_auth_ttl_sec={self.ttl_sec:g}; check the client clock")
        expires_at = ts_sec + self.ttl_sec if self.ttl_sec > 0 else math.inf
        try:
            fresh = self._replays.check_and_add(sig, expires_at, now)
        except ReplayMemoryFull as full:
            raise ApplianceError(
                "ERR1006", f"too many signed CreateSessions within create_session_auth_ttl_sec="
                f"{self.ttl_sec:g} s; retry shortly", retry_after_sec=full.retry_after_sec) from None
        if not fresh:
            raise _refuse("replayed signed token; each signature is accepted once, sign a fresh ts")
