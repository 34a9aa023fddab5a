"""Admission of CreateSession calls and the inbound audio byte budget of each session.

Owns who may open a session and how fast they may send audio: `Admission.admit` authenticates
(ERR1004) and applies the per-identity CreateSession rate limit (ERR1006); `Admission.adopt` stands a
session ticket in for both. Each returns an `AdmissionSlot`: who the session counts against. The
concurrent session caps (global, per client IP, per api_key: ERR1007) are counted by the one table of
live sessions (`appliance.session_table`), which holds each session's slot while it is live, so no
counter here can drift from what actually streams. The identity that limits key off is the api_key
when one was given, else the client IP (namespaced, so an api_key can never collide with an IP).
`AudioRateLimiter` turns `server.max_audio_bytes_per_sec*` into one byte budget per identity and
upload mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.config import AuthConfig, ServerConfig
from appliance.errors import ApplianceError
from appliance.security.auth import Authenticator
from appliance.security.limiter import KeyedRateLimiter

__all__ = ["Admission", "AdmissionSlot", "AudioRateLimiter", "upload_mode_of"]

UPLOAD_MODE_ATTR = "upload_mode"


def upload_mode_of(attributes: Mapping[str, str]) -> str:
    """"batch" when the session attribute upload_mode is batch (any case), else "realtime"."""
    return "batch" if str(attributes.get(UPLOAD_MODE_ATTR, "")).strip().lower() == "batch" else "realtime"


def _resolve(base: int, override: int | None) -> int:
    return base if override is None else override


class AudioRateLimiter:
    """Inbound audio bytes/sec per identity, with separate budgets for realtime and batch uploads.

    A mode override of null uses the base value, a rate of 0 disables limiting for that mode, and a
    burst of 0 equals the mode's rate (one second of audio).
    """

    def __init__(self, server: ServerConfig, *, max_keys: int = 10_000):
        self.limits_bytes_per_sec = {
            "realtime": (_resolve(server.max_audio_bytes_per_sec, server.max_audio_bytes_per_sec_realtime),
                         _resolve(server.max_audio_bytes_per_sec_burst,
                                  server.max_audio_bytes_per_sec_burst_realtime)),
            "batch": (_resolve(server.max_audio_bytes_per_sec, server.max_audio_bytes_per_sec_batch),
                      _resolve(server.max_audio_bytes_per_sec_burst, server.max_audio_bytes_per_sec_burst_batch)),
        }
        self._limiters = {mode: KeyedRateLimiter(rate, burst, max_keys=max_keys)
                          for mode, (rate, burst) in self.limits_bytes_per_sec.items()}

    def for_session(self, identity: str, upload_mode: str = "realtime") -> Callable[..., None]:
        """A `check(nbytes, now=None)` for one session's chunks; raises ERR1006 with retry_after_sec."""
        mode = "batch" if upload_mode == "batch" else "realtime"
        limiter = self._limiters[mode]
        rate = limiter.rate_per_sec

        def check(nbytes: int, now: float | None = None) -> None:
            if nbytes <= 0 or not limiter.enabled:
                return
            wait_sec = limiter.allow(identity, float(nbytes), now)
            if wait_sec > 0:
                raise ApplianceError(
                    "ERR1006", f"inbound audio rate limit exceeded: {nbytes} bytes over "
                    f"max_audio_bytes_per_sec{'_batch' if mode == 'batch' else ''}={rate:g} for this "
                    f"{_kind(identity)}; retry in {wait_sec:.2f} s", retry_after_sec=wait_sec)
        return check


def _kind(identity: str) -> str:
    return "api_key" if identity.startswith("key:") else "client IP"


@dataclass(frozen=True)
class AdmissionSlot:
    """Who an admitted session counts against: its client address, its api_key (if any), the
    identity its audio budget is keyed by, and its upload mode. The session table holds it while the
    session is live; it is not a session ticket (`appliance.security.tickets`)."""

    identity: str
    peer_ip: str
    api_key: str | None
    upload_mode: str


class Admission:
    """CreateSession gate: authenticate and rate-limit per identity. Thread-safe."""

    def __init__(self, server: ServerConfig, auth: AuthConfig, *, allowed_api_keys: set[str] | None = None):
        self.server = server
        self.authenticator = Authenticator(auth, allowed_api_keys=allowed_api_keys)
        self.create_session_limiter = KeyedRateLimiter(server.create_session_rps, server.create_session_burst)
        self.audio = AudioRateLimiter(server)

    def admit(self, peer_ip: str, metadata: Mapping[str, str], attributes: Mapping[str, str],
              now: float | None = None) -> AdmissionSlot:
        """The slot of a new session, or ApplianceError ERR1004 / ERR1006.
        `now` is wall-clock unix seconds (signed tokens carry wall-clock ts)."""
        now = time.time() if now is None else now
        api_key = self.authenticator.authenticate(metadata, attributes, now)
        identity = f"key:{api_key}" if api_key else f"ip:{peer_ip}"
        wait_sec = self.create_session_limiter.allow(identity, 1.0, now)
        if wait_sec <= 0 and api_key:
            # The client IP's own bucket applies beside the key's: rotating made-up keys buys nothing.
            wait_sec = self.create_session_limiter.allow(f"ip:{peer_ip}", 1.0, now)
            identity_kind = "client IP" if wait_sec > 0 else _kind(identity)
        else:
            identity_kind = _kind(identity)
        if wait_sec > 0:
            raise ApplianceError(
                "ERR1006", f"CreateSession rate limit exceeded for this {identity_kind} "
                f"(create_session_rps={self.server.create_session_rps:g}); retry in {wait_sec:.2f} s",
                retry_after_sec=wait_sec)
        return AdmissionSlot(identity, peer_ip, api_key, upload_mode_of(attributes))

    def adopt(self, peer_ip: str, creator: str, upload_mode: str) -> AdmissionSlot:
        """The slot of a session whose stream carries a session ticket (from another node, or from
        before a dropped connection): the ticket stands for authentication and the CreateSession
        rate; its audio budget is keyed by the creator (`creator`, hashed in the ticket)."""
        return AdmissionSlot(f"ticket:{creator}", peer_ip, None, upload_mode)

    def audio_budget(self, slot: AdmissionSlot) -> Callable[..., None]:
        """The session's `check(nbytes, now=None)` for its audio chunks (ERR1006 when over)."""
        return self.audio.for_session(slot.identity, slot.upload_mode)
