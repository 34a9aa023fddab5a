"""Session tickets: proof that a stream belongs to the session CreateSession made.

CreateSession returns a ticket in `session_token`: the session id, its resolved settings, a hash of
the creator's identity and an expiry, signed with HMAC-SHA256 under `auth.session_ticket_secret`
(random per boot when unset, so tickets then hold on this node only). The first chunk of a stream
must carry it; a missing, forged, expired or other session's ticket is refused (ERR1005) before the
stream touches the session. Any node holding the same secret can verify a ticket: a fleet's
balancer may send CreateSession and the stream to different nodes.

A stream's finals (and a resumable session's checkpoints) carry a *resume* ticket: the same claims
plus where a resumed stream picks up (the timeline offset the client resends its audio from and the
index of the next utterance), valid for `server.resume_window_sec`. After a dropped connection the
client re-attaches with the latest one, on this node or any other sharing the secret.

A signature proves a ticket was issued, not that its session is still live: the session table
(`appliance.session_table`) refuses the tickets of a session that has ended on this node (ERR1005).
Each session's tickets carry its incarnation (`nonce`, random per CreateSession), so a ticket of an
ended session cannot attach to a later session that reuses the same client-chosen id.

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
# A ticket we issue is a few hundred characters; the session's attributes (up to 32 of up to 2 KiB)
# ride in it, so the bound leaves room for those.
MAX_TICKET_CHARS = 131_072


@dataclass(frozen=True)
class TicketClaims:
    session_id: str
    expires_at: float  # unix seconds
    identity_hash: str  # sha256 prefix of who created the session (client IP or api key)
    settings: dict[str, Any]  # the resolved session settings, as CreateSession answered them
    resume_from_sec: float | None = None  # resume tickets: where the resent audio starts in the timeline
    next_utterance_index: int = 0  # resume tickets: the index the next utterance gets
    nonce: str = ""  # the session's incarnation ("" from builds before it existed)
    issued_at: float = 0.0  # unix seconds (0 from builds before it existed)

    @property
    def is_resume(self) -> bool:
        return self.resume_from_sec is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_nonce() -> str:
    """A session incarnation for its tickets (see the module docstring)."""
    return secrets.token_urlsafe(9)


def identity_hash(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


class TicketSigner:
    def __init__(self, secret: str = "", clock: Callable[[], float] = time.time):
        # Unset: random per boot (tickets are then valid on this process only).
        self._key = secret.encode("utf-8") if secret else secrets.token_bytes(32)
        self._clock = clock

    def issue(self, session_id: str, settings: dict[str, Any], identity: str, ttl_sec: float,
              nonce: str = "") -> str:
        now = self._clock()
        claims = {"sid": session_id, "exp": round(now + ttl_sec, 3), "iat": round(now, 3),
                  "idh": identity_hash(identity), "set": settings}
        return self._seal(claims | ({"n": nonce} if nonce else {}))

    def issue_resume(self, claims: TicketClaims, resume_from_sec: float, next_utterance_index: int,
                     ttl_sec: float) -> str:
        """A resume ticket for the session `claims` describe: resend from `resume_from_sec`."""
        now = self._clock()
        return self._seal({"sid": claims.session_id, "exp": round(now + ttl_sec, 3), "iat": round(now, 3),
                           "idh": claims.identity_hash, "set": claims.settings,
                           "rf": round(resume_from_sec, 6), "ui": next_utterance_index}
                          | ({"n": claims.nonce} if claims.nonce else {}))

    def _seal(self, claims: dict[str, Any]) -> str:
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
        return f"{VERSION}.{body}.{self._sign(body)}"

    def verify(self, ticket: str, session_id: str) -> TicketClaims:
        """The ticket's claims when it is ours, unexpired and for `session_id`; ERR1005 otherwise."""
        if not ticket:
            raise _refuse("the first chunk must carry the session_token (ticket) returned by CreateSession",
                          "missing")
        parts = ticket.split(".") if len(ticket) <= MAX_TICKET_CHARS and ticket.isascii() else []
        if len(parts) != 3 or parts[0] != VERSION:
            raise _refuse("session_token is not a ticket issued by this server", "forged")
        _, body, signature = parts
        if not hmac.compare_digest(signature.encode("ascii"), self._sign(body).encode("ascii")):
            raise _refuse("session_token is not a ticket issued by this server (bad signature)", "forged")
        try:
            claims = json.loads(_unb64(body))
            resume_from = claims.get("rf")
            parsed = TicketClaims(str(claims["sid"]), float(claims["exp"]), str(claims["idh"]), dict(claims["set"]),
                                  None if resume_from is None else float(resume_from), int(claims.get("ui", 0)),
                                  str(claims.get("n", "")), float(claims.get("iat", 0.0)))
        except (ValueError, KeyError, TypeError) as err:  # signed by us, so only a bug lands here
            raise _refuse("session_token could not be read", "forged") from err
        if parsed.session_id != session_id:
            raise _refuse("session_token belongs to another session", "other_session")
        if parsed.expires_at < self._clock():
            if parsed.is_resume:
                raise _refuse("session_token is a resume ticket older than server.resume_window_sec; "
                              "create a new session", "expired")
            raise _refuse("session_token has expired; create a new session", "expired")
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


class TicketRefused(ApplianceError):
    """ERR1005, with why: "missing", "forged", "other_session" or "expired"."""

    def __init__(self, message: str, reason: str):
        super().__init__("ERR1005", message)
        self.reason = reason


def _refuse(message: str, reason: str) -> TicketRefused:
    return TicketRefused(message, reason)
