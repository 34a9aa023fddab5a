"""The one table of live sessions: every "which sessions are here, and where do they stream" reads it.

Each session has one record:

    created ──attach──▶ streaming ──the stream ended (half-close and finals, an error, discarded)──▶ ended
        │                  │   ▲
        │                  │   └──resume (a ticket, within server.resume_window_sec)──┐
        │                  └──connection lost (or drained while resumable)──▶ resumable
        └──unused past server.session_timeout_sec: forgotten (it may stream on another node)

A record holds its settings, its ticket incarnation (`nonce`), its admission slot while live (created
or streaming: the global, per-address and per-api_key caps count those), the call streaming it and
that call's node-local attach generation, and its timeline (`SessionTimeline`: what this node sent).
Ended records are kept, bounded in number and for as long as any of their tickets can still be valid,
only so that those tickets are refused; resumable ones until their resume deadline.

Thread-safe: CreateSession runs on the event loop, but the HTTP plane (waitress threads) reads the
counts; one lock guards the records. The `LiveCall` a record points to is the event loop's alone.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config_schema import ServerConfig
from appliance.errors import ApplianceError
from appliance.security.admission import AdmissionSlot
from appliance.session_timeline import SessionTimeline
from appliance.streaming.session import SessionSettings

CAPACITY_RETRY_AFTER_SEC = 1.0
MAX_KEPT_RECORDS = 20_000  # ended and resumable records each, beyond the live ones
_NO_TIMELINE = SessionTimeline()  # an ended record's: never read (its tickets are refused first)


class SessionState(enum.Enum):
    CREATED = "created"
    STREAMING = "streaming"
    RESUMABLE = "resumable"
    ENDED = "ended"


@dataclass(frozen=True)
class TableLimits:
    max_sessions: int
    max_per_ip: int  # 0: no per-IP cap
    max_per_api_key: int  # 0: no per-key cap
    unused_ttl_sec: float  # created and never streamed: forgotten after this
    resume_window_sec: float  # a lost session waits this long for its client
    ticket_ttl_sec: float  # a CreateSession ticket's lifetime
    max_kept: int = MAX_KEPT_RECORDS

    @classmethod
    def from_config(cls, server: ServerConfig) -> TableLimits:
        ttl = float(server.session_timeout_sec or 60)
        return cls(server.max_sessions, server.max_sessions_per_ip, server.max_sessions_per_api_key,
                   unused_ttl_sec=ttl, resume_window_sec=float(server.resume_window_sec), ticket_ttl_sec=ttl)

    @property
    def retention_sec(self) -> float:
        """How long an ended record outlives its end: until every ticket it issued has expired."""
        return max(self.resume_window_sec, self.ticket_ttl_sec)


@dataclass(eq=False)
class LiveCall:
    """The call streaming a session here. Event loop only."""

    task: asyncio.Task | None
    peer: str
    generation: int = 0  # the record's attach generation this call holds
    stream: Any = None  # its Stream, once built (levels, drain)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    taken_over: bool = False  # a resume on another connection ended it
    input_ended_at: float | None = None  # loop time when its request stream ended (half-close or lost link)


@dataclass(eq=False)
class SessionRecord:
    session_id: str
    nonce: str  # the incarnation its tickets carry
    settings: SessionSettings | None
    state: SessionState
    slot: AdmissionSlot | None  # held while created or streaming
    deadline: float  # created: unused expiry; resumable: resume deadline; ended: forgotten then
    generation: int = 0  # node-local attach generation: bumped by every attach
    call: LiveCall | None = None
    timeline: SessionTimeline = field(default_factory=SessionTimeline)  # on the table's clock
    why_ended: str = ""  # for the refusal of its tickets
    let_go_at: float = 0.0  # unix seconds: when its last call here ended (later tickets came from elsewhere)


class SessionTable:
    def __init__(self, limits: TableLimits, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.limits = limits
        self._clock = clock
        self._wall_clock = wall_clock
        self._live: dict[str, SessionRecord] = {}  # created or streaming
        self._resumable: OrderedDict[str, SessionRecord] = OrderedDict()  # in deadline order
        self._ended: OrderedDict[str, SessionRecord] = OrderedDict()  # in deadline order
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------------

    def get(self, session_id: str) -> SessionRecord | None:
        with self._lock:
            self._expire()
            return self._find(session_id)

    def __len__(self) -> int:
        """Live sessions: created or streaming."""
        with self._lock:
            self._expire()
            return len(self._live)

    def count(self, state: SessionState) -> int:
        with self._lock:
            self._expire()
            if state is SessionState.RESUMABLE:
                return len(self._resumable)
            if state is SessionState.ENDED:
                return len(self._ended)
            return sum(1 for r in self._live.values() if r.state is state)

    def by_client(self) -> tuple[dict[str, int], dict[str, int]]:
        """Live sessions per client IP and per api_key."""
        with self._lock:
            self._expire()
            slots = [r.slot for r in self._live.values() if r.slot is not None]
        return (dict(Counter(s.peer_ip for s in slots)), dict(Counter(s.api_key for s in slots if s.api_key)))

    def calls(self) -> list[LiveCall]:
        """The calls streaming here."""
        with self._lock:
            return [r.call for r in self._live.values() if r.call is not None]

    # --- changing -----------------------------------------------------------------------------

    def create(self, settings: SessionSettings, slot: AdmissionSlot, nonce: str) -> None:
        """Register a new session (created); ERR1002 if its id is in use here, ERR1007 past a cap."""
        with self._lock:
            self._expire()
            self._claim_id(settings.session_id)
            self._check_caps(slot)
            self._ended.pop(settings.session_id, None)  # an ended session's id may be used again
            self._live[settings.session_id] = SessionRecord(
                settings.session_id, nonce, settings, SessionState.CREATED, slot,
                deadline=self._clock() + self.limits.unused_ttl_sec, timeline=SessionTimeline(self._clock))

    def attach(self, session_id: str, call: LiveCall) -> SessionRecord:
        """A created session starts streaming on `call`; ERR1001 when it is not (or no longer) created."""
        with self._lock:
            self._expire()
            record = self._live.get(session_id)
            if record is None or record.state is not SessionState.CREATED:
                raise ApplianceError("ERR1001", f"session {session_id!r} is unknown or expired; call "
                                     "CreateSession first")
            return self._stream_on(record, call)

    def adopt(self, settings: SessionSettings, slot: AdmissionSlot, nonce: str, call: LiveCall) -> SessionRecord:
        """Register, streaming on `call`, a session created elsewhere (its ticket named it)."""
        with self._lock:
            self._expire()
            self._claim_id(settings.session_id)
            self._check_caps(slot)
            self._ended.pop(settings.session_id, None)
            record = SessionRecord(settings.session_id, nonce, settings, SessionState.CREATED, slot, deadline=0.0,
                                   timeline=SessionTimeline(self._clock))
            self._live[settings.session_id] = record
            return self._stream_on(record, call)

    def resume(self, session_id: str, slot: AdmissionSlot, call: LiveCall) -> SessionRecord:
        """A resumable session streams again on `call` (admitted anew: the client may have moved)."""
        with self._lock:
            self._expire()
            record = self._resumable.get(session_id)
            if record is None:
                raise ApplianceError("ERR1002", f"session {session_id!r} is not waiting for a resume; retry",
                                     retry_after_sec=0.5)
            self._check_caps(slot)
            del self._resumable[session_id]
            record.slot = slot
            self._live[session_id] = record
            return self._stream_on(record, call)

    def finish(self, session_id: str, generation: int, *, lost: bool) -> None:
        """The call holding `generation` let go: the session ends, or (`lost`) waits for a resume.
        A call that was taken over holds an old generation and changes nothing."""
        with self._lock:
            record = self._live.get(session_id)
            if record is None or record.generation != generation or record.state is not SessionState.STREAMING:
                return
            del self._live[session_id]
            record.slot, record.call, record.let_go_at = None, None, self._wall_clock()
            if lost:
                record.state = SessionState.RESUMABLE
                record.deadline = self._clock() + self.limits.resume_window_sec
                self._resumable[session_id] = record
            else:
                self._end(record, "has ended")

    def discard_unused(self, session_id: str) -> None:
        """End a session no stream attached to (its creator gave up on it); a streaming one is left
        to its stream."""
        with self._lock:
            record = self._live.get(session_id)
            if record is not None and record.state is SessionState.CREATED:
                del self._live[session_id]
                record.slot, record.let_go_at = None, self._wall_clock()
                self._end(record, "was closed unused")

    # --- inside the lock ----------------------------------------------------------------------

    def _find(self, session_id: str) -> SessionRecord | None:
        return self._live.get(session_id) or self._resumable.get(session_id) or self._ended.get(session_id)

    def _claim_id(self, session_id: str) -> None:
        if session_id in self._live or session_id in self._resumable:
            raise ApplianceError("ERR1002", f"session_id {session_id!r} is already active")

    def _check_caps(self, slot: AdmissionSlot) -> None:
        limits = self.limits
        if len(self._live) >= limits.max_sessions:
            raise ApplianceError("ERR1007", f"server.max_sessions={limits.max_sessions} sessions are active",
                                 retry_after_sec=CAPACITY_RETRY_AFTER_SEC)
        slots = [r.slot for r in self._live.values() if r.slot is not None]
        if limits.max_per_ip and sum(s.peer_ip == slot.peer_ip for s in slots) >= limits.max_per_ip:
            raise ApplianceError("ERR1007", "too many concurrent sessions from this client IP "
                                 f"(max_sessions_per_ip={limits.max_per_ip})", retry_after_sec=CAPACITY_RETRY_AFTER_SEC)
        if slot.api_key and limits.max_per_api_key and \
                sum(s.api_key == slot.api_key for s in slots) >= limits.max_per_api_key:
            raise ApplianceError("ERR1007", "too many concurrent sessions for this api_key "
                                 f"(max_sessions_per_api_key={limits.max_per_api_key})",
                                 retry_after_sec=CAPACITY_RETRY_AFTER_SEC)

    def _stream_on(self, record: SessionRecord, call: LiveCall) -> SessionRecord:
        record.state = SessionState.STREAMING
        record.generation += 1
        call.generation = record.generation
        record.call = call
        return record

    def _end(self, record: SessionRecord, why: str) -> None:
        """Keep only what refusing its tickets needs, until they have all expired."""
        record.state, record.why_ended = SessionState.ENDED, why
        record.settings, record.timeline = None, _NO_TIMELINE  # its copies of finals go now
        record.deadline = self._clock() + self.limits.retention_sec
        self._ended[record.session_id] = record
        while len(self._ended) > self.limits.max_kept:
            self._ended.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        stale = [r for r in self._live.values() if r.state is SessionState.CREATED and r.deadline < now]
        for record in stale:  # forgotten, not ended: its stream may have gone to another node
            del self._live[record.session_id]
        while self._resumable:
            record = next(iter(self._resumable.values()))
            if record.deadline >= now and len(self._resumable) <= self.limits.max_kept:
                break
            del self._resumable[record.session_id]
            self._end(record, "was not resumed within server.resume_window_sec")
        while self._ended and next(iter(self._ended.values())).deadline < now:
            self._ended.popitem(last=False)
