"""The session facade the gRPC servicer calls: admit a session, run its stream, drain them all.

`SessionService.create_session` admits (lifecycle, capacity, memory, auth and rates) and registers a
session; `stream` attaches a StreamingRecognize call to it and runs the stage pipeline
(`appliance.streaming.stream`) built by `StreamBuilder`, which leases the model and a VAD slot for
the stream's lifetime. Every refusal is an `ApplianceError` with its code, counted in the metrics.

A stream attaches by its session ticket (`appliance.security.tickets`), so the session need not have
been created here: a ticket signed with the shared secret is adopted (a fleet's balancer sent
CreateSession elsewhere, or the stream resumes after a dropped connection), admitted against this
node's caps and resolved against its models. A resume ticket for a session still streaming here
takes the session over: the old call (its connection is gone, or about to be) ends first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from appliance.config import AppConfig
from appliance.errors import ApplianceError
from appliance.languages import WHISPER_LANGUAGES
from appliance.lifecycle import HealthState, Lifecycle
from appliance.models.registry import ModelRegistry
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.snapshot import StreamLevels
from appliance.resources import BufferLedger, MemoryBudget
from appliance.scheduler import DecodeScheduler
from appliance.security import Admission, Ticket, peer_ip
from appliance.security.open_calls import OpenCalls
from appliance.security.tickets import TicketClaims, TicketRefused, TicketSigner
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import StreamGate
from appliance.streaming.listeners import StreamListeners
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.session import (
    SESSION_ID_RE,
    ModelTraits,
    SessionDefaults,
    SessionRegistry,
    SessionRequest,
    SessionSettings,
    resolve_settings,
)
from appliance.streaming.stream import Stream
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import AudioIn, RecognitionResult, StreamLimits
from appliance.vad import VadPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamBuilder:
    """Builds one stream's pipeline from the shared parts, leasing its model and VAD slot."""

    limits: StreamLimits
    models: ModelRegistry
    vad_pool: Callable[[], VadPool]  # exists once the appliance has loaded
    scheduler: DecodeScheduler
    vad_executor: Executor
    ledger: BufferLedger
    listeners: StreamListeners
    admission: Admission

    @asynccontextmanager
    async def build(self, settings: SessionSettings, admission_ticket: object, start: ResumePoint = START,
                    resume_ticket: Callable[[ResumePoint], str] | None = None) -> AsyncIterator[Stream]:
        model = self.models.acquire(settings.model_id)
        vad = None
        try:
            pool = self.vad_pool()
            vad = pool.acquire()
            budget = self.admission.audio_budget(admission_ticket) if isinstance(admission_ticket, Ticket) else None

            def transcriber(deliver, on_progress) -> Transcriber:
                return Transcriber(settings, self.scheduler, model.backend, deliver=deliver, on_progress=on_progress,
                                   max_pending=self.limits.max_pending_per_stream)

            yield Stream(settings, self.limits, gate=StreamGate(settings, self.limits, budget), frontend=Frontend(vad),
                         transcriber_factory=transcriber, ledger=self.ledger, listener=self.listeners,
                         vad_executor=self.vad_executor, start=start, resume_ticket=resume_ticket)
        finally:
            if vad is not None:
                self.vad_pool().release(vad)
            self.models.release(model)


class SessionService:
    def __init__(self, config: AppConfig, *, health: HealthState, sessions: SessionRegistry, admission: Admission,
                 memory_budget: MemoryBudget, streams: StreamBuilder, metrics: ApplianceMetrics,
                 tickets: TicketSigner):
        self._config = config
        self._health = health
        self._sessions = sessions
        self._admission = admission
        self._memory_budget = memory_budget
        self._streams = streams
        self._metrics = metrics
        self._tickets = tickets
        # A ticket only has to outlive the wait between CreateSession and the stream's first chunk.
        self._ticket_ttl_sec = float(config.server.session_timeout_sec or 60)
        self._live: set[Stream] = set()
        self._calls: dict[str, _LiveCall] = {}  # session id -> the call streaming it here
        self._resume_window_sec = float(config.server.resume_window_sec)
        self._accepting = True  # False once drain() began (health may report draining earlier)
        s = config.server
        self._open_call_caps = OpenCalls(max_total=s.max_open_streams or 2 * s.max_sessions,
                                         max_per_ip=s.max_sessions_per_ip)
        self._attached_calls = 0  # StreamingRecognize calls attached to a session, built or not yet
        self._all_ended = asyncio.Event()
        self._all_ended.set()

    @property
    def max_chunk_ms(self) -> float | None:
        return self._config.server.max_chunk_ms

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    @property
    def active_streams(self) -> int:
        return self._attached_calls

    def stream_levels(self) -> list[StreamLevels]:
        """Each live stream's figures, keyed by a hash of its session id: visible load, no usable ids."""
        return [stream.levels(hashlib.sha256(stream.session_id.encode()).hexdigest()[:10])
                for stream in list(self._live)]

    def defaults(self) -> SessionDefaults:
        cfg = self._config
        models = self._streams.models
        return SessionDefaults(
            default_model_id=models.default_id or "", model_ids=models.ids(), decode_profiles=cfg.decode_profiles,
            default_decode_profile=cfg.model.default_decode_profile,
            language=(cfg.model.language or None), task=cfg.model.task,
            vad_silence_sec=float(cfg.vad.silence), vad_threshold=float(cfg.vad.threshold),
            emit_final_on_vad=bool(cfg.server.emit_final_on_vad),
            client_overrides=frozenset(cfg.decode.client_overrides), max_client_work=int(cfg.decode.max_client_work),
            model_traits=self._model_traits)

    def model_languages(self) -> dict[str, list[str]]:
        """Each loaded model id with the language codes it transcribes, for protocols that list them."""
        languages = {}
        for model_id in self._streams.models.ids():
            traits = self._model_traits(model_id)
            english_only = traits is None or traits.english_only
            languages[model_id] = ["en"] if english_only else sorted(WHISPER_LANGUAGES)
        return languages

    def _model_traits(self, model_id: str) -> ModelTraits | None:
        loaded = self._streams.models.get(model_id)
        if loaded is None:
            return None
        backend = loaded.backend
        return ModelTraits(english_only=backend.english_only, max_prompt_tokens=backend.max_prompt_tokens,
                           count_tokens=backend.count_tokens)

    # --- CreateSession ------------------------------------------------------------------------

    def create_session(self, request: SessionRequest, peer: str = "",
                       metadata: dict[str, str] | None = None) -> SessionSettings:
        """Admit (auth, rate, caps, memory) and register a session; every refusal has its code."""
        try:
            settings = self._admit(request, peer, metadata)
        except ApplianceError as err:
            self._metrics.error(err.code, "create_session")
            raise
        self._metrics.session_created(request.protocol)
        return settings

    def _admit(self, request: SessionRequest, peer: str, metadata: dict[str, str] | None) -> SessionSettings:
        self._require_serving()
        max_sessions = self._config.server.max_sessions
        if len(self._sessions) >= max_sessions:
            raise ApplianceError("ERR1007", f"server.max_sessions={max_sessions} sessions are active",
                                 retry_after_sec=1.0)
        self._memory_budget.admit_session(len(self._sessions))
        admitted = self._admission.admit(peer_ip(peer), metadata or {}, dict(request.attributes))
        try:
            settings = resolve_settings(request, self.defaults())
            ticket = self._tickets.issue(settings.session_id, ticket_claims(settings), admitted.identity,
                                         ttl_sec=self._ticket_ttl_sec)
            settings = dataclasses.replace(settings, token=ticket)
            self._sessions.add(settings, admitted)
        except BaseException:
            self._admission.release(admitted)
            raise
        return settings

    def discard_unused(self, session_id: str) -> None:
        """A transport that created a session and will not stream it (its client sent no audio, or
        left) gives it back at once, so its caps are not held until the unused-session expiry."""
        self._sessions.discard_unused(session_id)

    def _require_serving(self) -> None:
        state = self._health.state
        if not self._accepting or state is Lifecycle.STOPPED:
            raise ApplianceError("ERR1015", "the server is draining and accepts no new sessions", retry_after_sec=5.0)
        if state is Lifecycle.STARTING:
            raise ApplianceError("ERR1015", "the server is still starting", retry_after_sec=1.0)

    # --- StreamingRecognize -------------------------------------------------------------------

    async def stream(self, chunks: AsyncIterable[AudioIn], peer: str = "") -> AsyncGenerator[RecognitionResult, None]:
        """Run one StreamingRecognize call; the first chunk names the session. Counted from the
        moment it opens (ERR1007 past server.max_open_streams or the client IP's share)."""
        try:
            release = self._open_call_caps.acquire(peer_ip(peer))
        except ApplianceError as err:
            self._metrics.error(err.code, "stream")
            raise
        try:
            async for result in self._stream(chunks.__aiter__(), peer):
                yield result
        finally:
            release()

    async def _first_chunk(self, iterator: AsyncIterator[AudioIn]) -> AudioIn | None:
        """The call's first chunk (None when it half-closes without one); ERR1012 when it takes longer
        than server.first_chunk_timeout_sec, so a call that never speaks holds nothing for long."""
        timeout_sec = self._config.server.first_chunk_timeout_sec
        try:
            return await asyncio.wait_for(iterator.__anext__(), timeout=timeout_sec)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise ApplianceError("ERR1012", f"no chunk within {timeout_sec:g} s of opening the stream "
                                 "(server.first_chunk_timeout_sec)") from None

    async def _stream(self, iterator: AsyncIterator[AudioIn], peer: str) -> AsyncIterator[RecognitionResult]:
        try:
            first = await self._first_chunk(iterator)
            if first is None:
                return
            settings, claims = await self._attach(first, peer)
        except ApplianceError as err:
            self._metrics.error(err.code, "stream")
            raise
        listeners = self._streams.listeners
        error: ApplianceError | None = None
        call = _LiveCall(asyncio.current_task())
        self._calls[settings.session_id] = call
        self._attached_calls += 1
        self._all_ended.clear()
        start = ResumePoint(claims.resume_from_sec or 0.0, claims.next_utterance_index) if claims.is_resume else START

        def resume_ticket(point: ResumePoint) -> str:
            return self._tickets.issue_resume(claims, point.timeline_sec, point.next_utterance_index,
                                              ttl_sec=self._resume_window_sec)

        try:
            try:
                async with self._streams.build(settings, self._sessions.ticket(settings.session_id), start,
                                               resume_ticket) as stream:
                    self._live.add(stream)
                    if not self._accepting:
                        stream.close_input()
                    try:
                        async for result in stream.results(_prepend(first, iterator)):
                            yield result
                    finally:
                        self._live.discard(stream)
            except asyncio.CancelledError:
                if not call.taken_over:
                    raise
                # Cancelled by _take_over, not by gRPC: end this call with a status its client (if it
                # is still there) can read, rather than leaving it open with no answer.
                if (task := asyncio.current_task()) is not None:
                    task.uncancel()
                raise ApplianceError("ERR1002", f"session {settings.session_id!r} was resumed on another "
                                     "connection; this stream has ended") from None
        except ApplianceError as err:
            error = err
            raise
        finally:
            listeners.stream_ended(settings.session_id, error)
            self._sessions.end(settings.session_id)
            if self._calls.get(settings.session_id) is call:
                del self._calls[settings.session_id]
            call.ended.set()
            self._attached_calls -= 1
            if self._attached_calls == 0:
                self._all_ended.set()

    async def _attach(self, first: AudioIn, peer: str) -> tuple[SessionSettings, TicketClaims]:
        """The session the first chunk names, now streaming here, and its ticket's claims; every
        refusal leaves the session as it was."""
        if not self._accepting or self._health.state is Lifecycle.STOPPED:
            raise ApplianceError("ERR1015", "the server is draining and starts no new streams; open a session "
                                 "on another replica", retry_after_sec=5.0)
        session_id = first.session_id
        if not session_id:
            raise ApplianceError("ERR1001", "the first chunk must carry the session_id returned by CreateSession")
        if not SESSION_ID_RE.fullmatch(session_id):
            raise ApplianceError("ERR1001", "the first chunk's session_id is not one CreateSession returns")
        claims = self._verify_ticket(first)  # before anything else: a refusal leaves the real session as it was
        state = self._sessions.state(session_id)
        if state == "streaming":
            if not claims.is_resume:
                raise ApplianceError("ERR1002", f"session {session_id!r} is already streaming")
            await self._take_over(session_id)
            state = self._sessions.state(session_id)
        if state == "created":
            settings = self._sessions.start_stream(session_id)
        else:
            settings = self._adopt(claims, session_id, peer)
        return dataclasses.replace(settings, token=first.session_token), claims

    def _verify_ticket(self, first: AudioIn) -> TicketClaims:
        """The claims of the first chunk's ticket. ERR1005 for a missing, forged, expired or other
        session's ticket; ERR1001 when the session is not known here and its ticket does not prove
        that a node sharing our secret created it."""
        try:
            return self._tickets.verify(first.session_token, first.session_id)
        except TicketRefused as err:
            if err.reason != "expired" and self._sessions.state(first.session_id) is None:
                raise ApplianceError("ERR1001", f"session {first.session_id!r} is unknown or expired; call "
                                     "CreateSession first") from None
            raise

    def _adopt(self, claims: TicketClaims, session_id: str, peer: str) -> SessionSettings:
        """Register, streaming, a session this node did not create (its ticket names the settings),
        held to this node's capacity and memory caps and resolved against its models."""
        max_sessions = self._config.server.max_sessions
        if len(self._sessions) >= max_sessions:
            raise ApplianceError("ERR1007", f"server.max_sessions={max_sessions} sessions are active",
                                 retry_after_sec=1.0)
        self._memory_budget.admit_session(len(self._sessions))
        request = session_request_from_claims(session_id, claims.settings)
        settings = resolve_settings(request, self.defaults())
        admitted = self._admission.admit_adopted(peer_ip(peer), claims.identity_hash, settings.upload_mode)
        try:
            self._sessions.add(settings, admitted)
        except BaseException:
            self._admission.release(admitted)
            raise
        self._metrics.session_created(settings.protocol)
        return self._sessions.start_stream(session_id)

    async def _take_over(self, session_id: str) -> None:
        """End the call streaming `session_id` here (its client has re-attached, so that call's
        connection is gone or going) and wait until it has let go of the session."""
        call = self._calls.get(session_id)
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

    async def drain(self, timeout_sec: float) -> bool:
        """Refuse new sessions and streams, end every stream's input (each sends the finals due,
        its open utterance's too unless resumable, then ERR1015 so its client resumes elsewhere)
        and wait up to `timeout_sec` (<= 0: forever) for them; True when all ended."""
        self._accepting = False
        for stream in list(self._live):
            stream.close_input()
        try:
            await asyncio.wait_for(self._all_ended.wait(), timeout=timeout_sec if timeout_sec > 0 else None)
            return True
        except TimeoutError:
            log.warning("drain timed out after %.1f s with %d streams still open", timeout_sec, len(self._live))
            return False


TAKEOVER_TIMEOUT_SEC = 5.0  # a resumed session's previous call has this long to let go of it


@dataclass(eq=False)
class _LiveCall:
    task: asyncio.Task | None
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    taken_over: bool = False  # a resume on another connection ended it


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


async def _prepend(first: AudioIn, rest: AsyncIterator[AudioIn]) -> AsyncIterator[AudioIn]:
    yield first
    async for item in rest:
        yield item
