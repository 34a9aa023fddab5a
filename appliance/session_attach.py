"""Attaching a stream to its session: the first chunk's ticket, held against the session table.

The first chunk names the session and carries a ticket (`appliance.security.tickets`); a missing,
forged, expired or other session's ticket is refused (ERR1005) before anything else. Then the
session's record here decides (`appliance.session_table`):

- none, or ended with the ticket issued after its last call here let go (it lived on on another
  node): the session is adopted from the ticket's settings (a fleet's balancer sent CreateSession
  elsewhere, or the stream resumes after a dropped connection elsewhere);
- created: it starts streaming;
- streaming: a resume ticket takes it over (the old call's connection is gone or going; it ends with
  ERR1002 and the session is resumed here), any other ticket is refused (ERR1002);
- resumable (its connection was lost): it resumes from the ticket's point, unless that point goes
  back over results already delivered (ERR1005, `appliance.session_timeline`);
- ended (its client ended the stream, an error ended it, or it was discarded): every ticket of it is
  refused (ERR1005). Only a lost connection leaves a session resumable.

New, adopted and resumed sessions pass one admission path (`SessionAdmission.admit`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from appliance.errors import ApplianceError
from appliance.frontdoor import grpc_peer_address
from appliance.observability.metrics import ApplianceMetrics
from appliance.resources import MemoryBudget
from appliance.security import Admission, AdmissionSlot
from appliance.security.tickets import TicketClaims, TicketRefused, TicketSigner
from appliance.session_table import LiveCall, SessionRecord, SessionState, SessionTable
from appliance.session_timeline import ReplayGuard
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.session import (
    SESSION_ID_RE,
    SessionDefaults,
    SessionRequest,
    SessionSettings,
    resolve_settings,
)
from appliance.streaming.types import AudioIn

log = logging.getLogger(__name__)
T = TypeVar("T")
TAKEOVER_TIMEOUT_SEC = 5.0  # a resumed session's previous call has this long to let go of it
# A ticket issued this long after an ended session's last call here let go came from another node,
# where the session lived on (issue times are rounded to the millisecond; the margin covers that).
ISSUED_AT_MARGIN_SEC = 1.0


class SessionAdmission:
    """The one way a session is admitted here, whether created, adopted or resumed: memory allows
    one more, the client is who it says (CreateSession: auth and rate limits; a ticket stands for
    both), and the table's caps (global, per client IP, per api_key) hold as `register` adds it."""

    def __init__(self, table: SessionTable, admission: Admission, memory_budget: MemoryBudget):
        self._table = table
        self._admission = admission
        self._memory_budget = memory_budget

    def admit(self, peer: str, register: Callable[[AdmissionSlot], T], *, claims: TicketClaims | None = None,
              metadata: dict[str, str] | None = None, attributes: dict[str, str] | None = None,
              upload_mode: str = "realtime") -> T:
        self._memory_budget.admit_session(len(self._table))
        ip = grpc_peer_address(peer)
        if claims is not None:
            slot = self._admission.adopt(ip, claims.identity_hash, upload_mode)
        else:
            slot = self._admission.admit(ip, metadata or {}, attributes or {})
        return register(slot)


@dataclass(frozen=True)
class Attachment:
    settings: SessionSettings  # its token: the first chunk's (require_token checks the rest against it)
    claims: TicketClaims
    start: ResumePoint  # where the timeline continues
    record: SessionRecord
    guard: ReplayGuard  # holds back what this node already finalized


class Attacher:
    def __init__(self, table: SessionTable, tickets: TicketSigner, admission: SessionAdmission,
                 defaults: Callable[[], SessionDefaults], metrics: ApplianceMetrics):
        self._table = table
        self._tickets = tickets
        self._admission = admission
        self._defaults = defaults
        self._metrics = metrics

    async def attach(self, first: AudioIn, peer: str, call: LiveCall) -> Attachment:
        """The session the first chunk names, now streaming on `call`; every refusal leaves the
        session as it was."""
        session_id = first.session_id
        if not session_id:
            raise ApplianceError("ERR1001", "the first chunk must carry the session_id returned by CreateSession")
        if not SESSION_ID_RE.fullmatch(session_id):
            raise ApplianceError("ERR1001", "the first chunk's session_id is not one CreateSession returns")
        claims = self._verify(first)
        start = ResumePoint(claims.resume_from_sec or 0.0, claims.next_utterance_index) if claims.is_resume else START
        record = self._table.get(session_id)
        if record is not None and record.state is SessionState.STREAMING:
            record = await self._take_over(record, claims)
        record = self._claim(record, claims, start, peer, call)
        assert record.settings is not None  # a record streaming has its settings
        settings = dataclasses.replace(record.settings, token=first.session_token)
        return Attachment(settings, claims, start, record, record.timeline.replay_guard())

    def _verify(self, first: AudioIn) -> TicketClaims:
        """ERR1005 for a missing, forged, expired or other session's ticket; ERR1001 when the session
        is not known here and its ticket does not prove that a node sharing our secret created it."""
        try:
            return self._tickets.verify(first.session_token, first.session_id)
        except TicketRefused as err:
            if err.reason != "expired" and self._table.get(first.session_id) is None:
                raise ApplianceError("ERR1001", f"session {first.session_id!r} is unknown or expired; call "
                                     "CreateSession first") from None
            raise

    def _claim(self, record: SessionRecord | None, claims: TicketClaims, start: ResumePoint, peer: str,
               call: LiveCall) -> SessionRecord:
        session_id = claims.session_id
        if record is not None and record.state is SessionState.ENDED and \
                claims.issued_at > record.let_go_at + ISSUED_AT_MARGIN_SEC:
            record = None  # issued after its last call here let go: the session lived on on another node
        if record is None:
            return self._adopt(claims, peer, call)
        if record.state is SessionState.ENDED:
            raise ApplianceError("ERR1005", f"session {session_id!r} {record.why_ended}: its tickets are no longer "
                                 "valid (only a lost connection leaves a session resumable); create a new session")
        if record.nonce and claims.nonce and record.nonce != claims.nonce:
            raise ApplianceError("ERR1005", "session_token belongs to an earlier session with this session_id")
        if record.state is SessionState.CREATED:
            return self._table.attach(session_id, call)
        record.timeline.check_resume(session_id, start)
        upload_mode = record.settings.upload_mode if record.settings else "realtime"
        return self._admission.admit(peer, lambda slot: self._table.resume(session_id, slot, call), claims=claims,
                                     upload_mode=upload_mode)

    def _adopt(self, claims: TicketClaims, peer: str, call: LiveCall) -> SessionRecord:
        """Register, streaming, a session this node did not create (or no longer knows): its ticket
        names the settings, resolved against this node's models and policy."""
        settings = resolve_settings(session_request_from_claims(claims.session_id, claims.settings), self._defaults())
        settings = dataclasses.replace(settings, token="")
        record = self._admission.admit(
            peer, lambda slot: self._table.adopt(settings, slot, claims.nonce, call), claims=claims,
            upload_mode=settings.upload_mode)
        self._metrics.session_created(settings.protocol)
        return record

    async def _take_over(self, record: SessionRecord, claims: TicketClaims) -> SessionRecord | None:
        """End the call streaming the session here (its client has re-attached, so that call's
        connection is gone or going), wait until it has let go, and return the record as it is then."""
        session_id = record.session_id
        if not claims.is_resume:
            raise ApplianceError("ERR1002", f"session {session_id!r} is already streaming")
        call = record.call
        if call is None or call.task is None:
            raise ApplianceError("ERR1002", f"session {session_id!r} is still attaching; retry", retry_after_sec=0.5)
        log.info("session %s resumed on a new connection: ending its previous stream", session_id)
        call.taken_over = True
        call.task.cancel()
        try:
            await asyncio.wait_for(call.ended.wait(), timeout=TAKEOVER_TIMEOUT_SEC)
        except TimeoutError:
            raise ApplianceError("ERR1002", f"session {session_id!r} is still streaming; retry",
                                 retry_after_sec=1.0) from None
        return self._table.get(session_id)


def ticket_claims(settings: SessionSettings) -> dict:
    """The session a ticket carries, as the request that resolves to it: what another node needs to
    serve the session (it resolves them against its own models and policy). Credentials stay out:
    the claims are signed, not secret."""
    s = settings
    return {"model_id": s.model_id, "decode_profile": s.decode_profile, "language": s.language or "",
            "task": s.task, "vad_mode": s.vad_mode, "vad_silence_sec": s.vad_silence_sec,
            "vad_threshold": s.vad_threshold, "require_token": s.require_token, "protocol": s.protocol,
            "attributes": {k: v for k, v in sorted(s.attributes.items()) if not k.startswith("api_key")}}


def session_request_from_claims(session_id: str, claims: dict) -> SessionRequest:
    """The request a ticket's claims stand for (see `ticket_claims`); ERR1005 if they are not one."""
    try:
        return SessionRequest(
            session_id=session_id, attributes={str(k): str(v) for k, v in dict(claims["attributes"]).items()},
            vad_mode=str(claims["vad_mode"]), vad_silence_sec=float(claims["vad_silence_sec"]),
            vad_threshold=float(claims["vad_threshold"]), language=str(claims["language"]), task=str(claims["task"]),
            decode_profile=str(claims["decode_profile"]), model_id=str(claims["model_id"]),
            require_token=bool(claims["require_token"]), protocol=str(claims["protocol"]))
    except (KeyError, TypeError, ValueError):  # signed with our secret by an older build
        raise ApplianceError("ERR1005", "session_token's settings are not readable by this server; "
                             "create a new session") from None
