"""The session facade the doors call: admit a session, run its stream, drain them all.

`SessionService.create_session` admits a session (`appliance.session_attach.SessionAdmission`: auth,
rate limits, memory, and the caps of the one table of live sessions, `appliance.session_table`) and
registers it there; `stream` attaches a call to it by its ticket (`appliance.session_attach`) and runs
the stage pipeline (`appliance.streaming.stream`) built by `StreamBuilder`, which leases the model and
a VAD slot for the stream's lifetime. Every refusal is an `ApplianceError` with its code, counted in
the metrics. How a call ends decides what its session's tickets are worth: a stream that ran to its
end (half-close and finals), an error, or its door's cancel ends the session and its tickets; a lost
gRPC connection (or a drain of a resumable session) leaves it resumable for server.resume_window_sec.

Connection caps belong to the doors (`appliance.frontdoor`); the drain switch is the shared DrainGate.
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
from appliance.frontdoor import DrainGate
from appliance.languages import WHISPER_LANGUAGES
from appliance.lifecycle import HealthState, Lifecycle
from appliance.models.registry import ModelRegistry
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.snapshot import StreamLevels
from appliance.resources import BufferLedger, MemoryBudget
from appliance.scheduler import DecodeScheduler
from appliance.security import Admission, AdmissionSlot
from appliance.security.tickets import TicketSigner, new_nonce
from appliance.session_attach import Attacher, Attachment, SessionAdmission, ticket_claims
from appliance.session_table import LiveCall, SessionState, SessionTable
from appliance.session_timeline import ReplayGuard
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import StreamGate
from appliance.streaming.listeners import StreamListeners
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.session import ModelTraits, SessionDefaults, SessionRequest, SessionSettings, resolve_settings
from appliance.streaming.stream import Stream
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import AudioIn, RecognitionResult, StreamLimits
from appliance.vad import VadPool

log = logging.getLogger(__name__)
DRAIN_POLL_SEC = 0.05  # drain waits for the table's streaming count to reach 0
# The doors whose clients get resume tokens. A stream of another door that stops early was cancelled
# by its door (its client left, or its upload failed): nobody can resume it, so it ends.
RESUMING_PROTOCOLS = frozenset({"grpc"})
# gRPC ends a call's request stream the same way for a half-close and for a lost connection, and
# cancels the call a moment later (0.1 ms on an idle loop) in the second case. A stream whose input
# ended stays open at least this long after, so the cancel can land before the session is declared
# ended: otherwise a stream with nothing left to decode ended its session on a dropped link.
INPUT_END_SETTLE_SEC = 0.05


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
    async def build(self, settings: SessionSettings, slot: AdmissionSlot | None, start: ResumePoint = START,
                    resume_ticket: Callable[[ResumePoint], str] | None = None,
                    guard: ReplayGuard | None = None) -> AsyncIterator[Stream]:
        """`guard`: a resumed call's filter; the listeners do not hear what it holds back."""
        model = self.models.acquire(settings.model_id)
        vad = None
        try:
            pool = self.vad_pool()
            vad = pool.acquire()
            budget = self.admission.audio_budget(slot) if slot is not None else None
            listener = guard.listener(self.listeners) if guard is not None else self.listeners

            def transcriber(deliver, on_progress) -> Transcriber:
                return Transcriber(settings, self.scheduler, model.backend, deliver=deliver, on_progress=on_progress,
                                   max_pending=self.limits.max_pending_per_stream)

            yield Stream(settings, self.limits, gate=StreamGate(settings, self.limits, budget), frontend=Frontend(vad),
                         transcriber_factory=transcriber, ledger=self.ledger, listener=listener,
                         vad_executor=self.vad_executor, start=start, resume_ticket=resume_ticket)
        finally:
            if vad is not None:
                self.vad_pool().release(vad)
            self.models.release(model)

    def model_traits(self, model_id: str) -> ModelTraits | None:
        loaded = self.models.get(model_id)
        if loaded is None:
            return None
        backend = loaded.backend
        return ModelTraits(english_only=backend.english_only, max_prompt_tokens=backend.max_prompt_tokens,
                           count_tokens=backend.count_tokens, languages=backend.languages)


class SessionService:
    def __init__(self, config: AppConfig, *, health: HealthState, table: SessionTable, admission: Admission,
                 memory_budget: MemoryBudget, streams: StreamBuilder, metrics: ApplianceMetrics,
                 tickets: TicketSigner, drain_gate: DrainGate):
        self._config = config
        self._health = health
        self._table = table
        self._streams = streams
        self._metrics = metrics
        self._tickets = tickets
        self._gate = drain_gate
        self._admission = SessionAdmission(table, admission, memory_budget)
        self._attacher = Attacher(table, tickets, self._admission, self.defaults, metrics)
        # A ticket only has to outlive the wait between CreateSession and the stream's first chunk.
        self._ticket_ttl_sec = table.limits.ticket_ttl_sec
        self._resume_window_sec = table.limits.resume_window_sec

    @property
    def max_chunk_ms(self) -> float | None:
        return self._config.server.max_chunk_ms

    @property
    def table(self) -> SessionTable:
        return self._table

    @property
    def active_sessions(self) -> int:
        return len(self._table)

    @property
    def active_streams(self) -> int:
        return self._table.count(SessionState.STREAMING)

    @property
    def resumable_sessions(self) -> int:
        return self._table.count(SessionState.RESUMABLE)

    def sessions_by_client(self) -> tuple[dict[str, int], dict[str, int]]:
        """Live sessions per client IP and per api_key."""
        return self._table.by_client()

    def stream_levels(self) -> list[StreamLevels]:
        """Each live stream's figures, keyed by a hash of its session id: visible load, no usable ids."""
        return [call.stream.levels(hashlib.sha256(call.stream.session_id.encode()).hexdigest()[:10])
                for call in self._table.calls() if call.stream is not None]

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
            model_traits=self._streams.model_traits)

    def model_languages(self) -> dict[str, list[str]]:
        """Each loaded model id with the language codes it transcribes, for protocols that list them."""
        languages = {}
        for model_id in self._streams.models.ids():
            traits = self._streams.model_traits(model_id)
            if traits is None or traits.english_only:
                languages[model_id] = ["en"]
            else:  # model.languages where the operator listed some
                languages[model_id] = list(traits.languages) or sorted(WHISPER_LANGUAGES)
        return languages

    # --- CreateSession ------------------------------------------------------------------------

    def create_session(self, request: SessionRequest, peer: str = "",
                       metadata: dict[str, str] | None = None) -> SessionSettings:
        """Admit and register a session; every refusal has its code."""
        try:
            self._require_serving()
            settings = self._admission.admit(peer, lambda slot: self._register(request, slot),
                                             metadata=metadata, attributes=dict(request.attributes))
        except ApplianceError as err:
            self._metrics.error(err.code, "create_session")
            raise
        self._metrics.session_created(request.protocol)
        return settings

    def _register(self, request: SessionRequest, slot: AdmissionSlot) -> SessionSettings:
        settings = resolve_settings(request, self.defaults())
        nonce = new_nonce()
        ticket = self._tickets.issue(settings.session_id, ticket_claims(settings), slot.identity,
                                     ttl_sec=self._ticket_ttl_sec, nonce=nonce)
        settings = dataclasses.replace(settings, token=ticket)
        self._table.create(settings, slot, nonce)
        return settings

    def discard_unused(self, session_id: str) -> None:
        """A door that created a session and will not stream it (its client sent no audio, or left)
        ends it at once: its caps are free and its ticket is refused from now on."""
        self._table.discard_unused(session_id)

    def _require_serving(self) -> None:
        self._gate.check("new sessions")
        state = self._health.state
        if state is Lifecycle.STOPPED:
            raise ApplianceError("ERR1015", "the server has stopped and accepts no new sessions", retry_after_sec=5.0)
        if state is Lifecycle.STARTING:
            raise ApplianceError("ERR1015", "the server is still starting", retry_after_sec=1.0)

    # --- StreamingRecognize -------------------------------------------------------------------

    async def stream(self, chunks: AsyncIterable[AudioIn], peer: str = "") -> AsyncGenerator[RecognitionResult, None]:
        """Run one streaming call; its first chunk names the session (caps on open calls are the door's)."""
        iterator = chunks.__aiter__()
        call = LiveCall(asyncio.current_task(), peer)
        try:
            first = await self._first_chunk(iterator)
            if first is None:
                return
            self._gate.check("new streams")
            if self._health.state is Lifecycle.STOPPED:
                raise ApplianceError("ERR1015", "the server has stopped and starts no new streams", retry_after_sec=5.0)
            attached = await self._attacher.attach(first, peer, call)
        except ApplianceError as err:
            self._metrics.error(err.code, "stream")
            raise
        async for result in self._run(attached, call, _prepend(first, iterator)):
            yield result

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

    async def _run(self, attached: Attachment, call: LiveCall, chunks: AsyncIterator[AudioIn]
                   ) -> AsyncIterator[RecognitionResult]:
        """Stream the attached session; how the call ends decides whether the session ends or
        waits for a resume (the module docstring)."""
        settings, record, guard = attached.settings, attached.record, attached.guard
        timeline = record.timeline
        ended = False  # the stream ran to its end, or an error ended the session (not a lost connection)
        error: ApplianceError | None = None

        def resume_ticket(point: ResumePoint) -> str:
            timeline.token_issued(point)
            return self._tickets.issue_resume(attached.claims, point.timeline_sec, point.next_utterance_index,
                                              ttl_sec=self._resume_window_sec)

        try:
            async with self._streams.build(settings, record.slot, attached.start, resume_ticket, guard) as stream:
                call.stream = stream
                if not self._gate.accepting:
                    stream.close_input()
                async for result in stream.results(_observed(chunks, timeline.chunk_received, call)):
                    out = guard.outgoing(result)
                    if out is not None:
                        timeline.result_sent(out)
                        yield out
            if settings.protocol in RESUMING_PROTOCOLS:
                await _settle_after_input_end(call)
            ended = True
        except asyncio.CancelledError:
            if not call.taken_over:
                raise
            # Cancelled by a takeover, not by the transport: end this call with a status its client (if
            # it is still there) can read, rather than leaving it open with no answer.
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            error = ApplianceError("ERR1002", f"session {settings.session_id!r} was resumed on another "
                                   "connection; this stream has ended")
            raise error from None
        except ApplianceError as err:
            error = err
            ended = not (err.code == "ERR1015" and settings.resumable)
            raise
        except Exception:
            ended = True
            raise
        finally:
            lost = (not ended or call.taken_over) and settings.protocol in RESUMING_PROTOCOLS
            self._table.finish(settings.session_id, call.generation, lost=lost)
            self._streams.listeners.stream_ended(settings.session_id, error)
            call.ended.set()

    async def drain(self, timeout_sec: float) -> bool:
        """Close the drain gate (no new sessions or streams), end every stream's input (each sends the
        finals due, its open utterance's too unless resumable, then ERR1015 so its client resumes
        elsewhere) and wait up to `timeout_sec` (<= 0: forever) for them; True when all ended."""
        self._gate.close()
        for call in self._table.calls():
            if call.stream is not None:
                call.stream.close_input()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_sec if timeout_sec > 0 else float("inf")
        while (left := self._table.count(SessionState.STREAMING)) and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SEC)
        if left:
            log.warning("drain timed out after %.1f s with %d streams still open", timeout_sec, left)
        return not left


async def _prepend(first: AudioIn, rest: AsyncIterator[AudioIn]) -> AsyncIterator[AudioIn]:
    yield first
    async for item in rest:
        yield item


async def _observed(chunks: AsyncIterator[AudioIn], on_chunk: Callable[[], None], call: LiveCall
                    ) -> AsyncIterator[AudioIn]:
    """`chunks`, noting when each arrives (the session timeline's in-flight margin) and when they end."""
    async for chunk in chunks:
        on_chunk()
        yield chunk
    call.input_ended_at = asyncio.get_running_loop().time()


async def _settle_after_input_end(call: LiveCall) -> None:
    """Wait out what is left of INPUT_END_SETTLE_SEC since the input ended (usually nothing: decoding
    the last final takes longer); a lost connection's cancel lands here."""
    if call.input_ended_at is not None:
        left = call.input_ended_at + INPUT_END_SETTLE_SEC - asyncio.get_running_loop().time()
        if left > 0:
            await asyncio.sleep(left)
