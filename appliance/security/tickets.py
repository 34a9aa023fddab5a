"""Session tickets: proof that a stream belongs to the session CreateSession made.

CreateSession returns a ticket in `session_token`: the session id, its resolved settings, a hash of
the creator's identity and an expiry, signed with HMAC-SHA256 under `auth.session_ticket_secret`
(random per boot when unset, so tickets then hold on this node only). The first chunk of a stream
must carry it; a missing, forged, expired or other session's ticket is refused (ERR1005) before the
stream touches the session. Any node holding the same secret can verify a ticket, which is what a
fleet and resumable streams need later.

Format: `v1.<base64url(JSON claims)>.<base64url(HMAC)>`; the claims are not secret (no credentials,
no audio), only unforgeable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError

VERSION = "v1"
MAX_TICKET_CHARS = 4096  # a ticket we issue is a few hundred characters


@dataclass(frozen=True)
class TicketClaims:
    session_id: str
    expires_at: float  # unix seconds
    identity_hash: str  # sha256 prefix of who created the session (client IP or api key)
    settings: dict[str, Any]  # the resolved session settings, as CreateSession answered them


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def identity_hash(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


class TicketSigner:
    def __init__(self, secret: str = "", clock: Callable[[], float] = time.time):
        # Unset: random per boot (tickets are then valid on this process only).
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self._clock = clock

    def issue(self, session_id: str, settings: dict[str, Any], identity: str, ttl_sec: float) -> str:
        claims = {"sid": session_id, "exp": round(self._clock() + ttl_sec, 3), "idh": identity_hash(identity),
                  "set": settings}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{VERSION}.{body}.{self._sign(body)}"

    def verify(self, ticket: str, session_id: str) -> TicketClaims:
        """The ticket's claims when it is ours, unexpired and for `session_id`; ERR1005 otherwise."""
        if not ticket:
            raise _refuse("the first chunk must carry the session_token (ticket) returned by CreateSession")
        parts = ticket.split(".") if len(ticket) <= MAX_TICKET_CHARS and ticket.isascii() else []
        if len(parts) != 3 or parts[0] != VERSION:
            raise _refuse("session_token is not a ticket issued by this server")
        _, body, signature = parts
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(body).encode("ascii")):
            raise _refuse("session_token is not a ticket issued by this server (bad signature)")
        try:
            claims = json.loads(_unb64(body))
            parsed = TicketClaims(str(claims["sid"]), float(claims["exp"]), str(claims["idh"]), dict(claims["set"]))
        except (ValueError, KeyError, TypeError) as err:  # signed by us, so only a bug lands here
            raise _refuse("session_token could not be read") from err
        if parsed.session_id != session_id:
            raise _refuse("session_token belongs to another session")
        if parsed.expires_at < self._clock():
            raise _refuse("session_token has expired; create a new session")
        return parsed

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, f"{VERSION}.{body}".encode("ascii"), hashlib.sha256).digest())


def tokens_match(presented: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a client-sent token with ours, on bytes: a client may send any
    character (WSGI hands headers over as latin-1), and hmac.compare_digest refuses non-ASCII str."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape"))


def _refuse(message: str) -> ApplianceError:
    return ApplianceError("ERR1005", message)
