"""Wires the appliance together and owns its lifecycle: starting -> serving -> draining -> stopped.

One `Lifecycle` state drives gRPC health (and, later, HTTP /health and sd_notify). The transports
call `create_session` and `stream`; everything they need beyond translation lives here or below.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from appliance.config import AppConfig
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, load_backend
from appliance.models.store import ResolvedModel, resolve_model
from appliance.resources import BufferLedger, MemoryBudget
from appliance.scheduler import DecodeScheduler
from appliance.observability.transcripts import TranscriptSink
from appliance.security import Admission, peer_ip
from appliance.storage import AudioStore
from appliance.streaming.orchestrator import StreamOrchestrator
from appliance.streaming.session import SessionDefaults, SessionRegistry, SessionRequest, SessionSettings, resolve_settings
from appliance.streaming.types import AudioIn, RecognitionResult, StreamLimits
from appliance.vad import SileroOnnx, VadPool

log = logging.getLogger(__name__)


class Lifecycle(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


def model_id_for(config: AppConfig) -> str:
    """`<device>-<model name>`, e.g. cpu-tiny.en: the id clients pass as model_id."""
    return f"{config.model.device}-{os.path.basename(str(config.model.name).rstrip('/'))}"


def stream_limits(config: AppConfig) -> StreamLimits:
    s = config.server
    return StreamLimits(
        session_timeout_sec=float(s.session_timeout_sec or 0),
        max_chunk_ms=s.max_chunk_ms,
        default_sample_rate_hz=int(s.sample_rate),
        max_buffer_sec=s.max_buffer_sec,
        max_buffer_bytes=s.max_buffer_bytes,
        buffer_overlap_sec=float(s.buffer_overlap_sec or 0.0),
        partial_interval_sec=s.partial_decode_interval_sec,
        partial_window_sec=float(s.partial_decode_window_sec),
        speech_rms_threshold=float(config.safety.speech_rms_threshold),
        max_audio_sec_per_session=s.max_audio_seconds_per_session or None,
        max_pending_per_stream=int(s.max_pending_decodes_per_stream),
        partial_skip_unchanged=bool(s.partial_skip_unchanged),
    )


class Runtime:
    def __init__(self, config: AppConfig, *, on_state_change: Callable[[Lifecycle], None] | None = None,
                 hardware_report: dict | None = None):
        self.config = config
        # What `appliance.hardware` detected and chose at boot (shown by /system); empty when pinned.
        self.hardware_report = hardware_report or {}
        self.state = Lifecycle.STARTING
        self._on_state_change = on_state_change
        self.backend: Backend | None = None
        self.model_id = model_id_for(config)
        self.admission = Admission(config.server, config.auth)
        self.sessions = SessionRegistry(unused_ttl_sec=float(config.server.session_timeout_sec or 60),
                                        on_release=self.admission.release)
        s = config.server
        self.scheduler = DecodeScheduler(
            max_in_flight=config.model.pool_size, max_pending_global=s.max_pending_decodes_global,
            queue_timeout_sec=float(s.decode_queue_timeout_sec), batch_window_ms=float(s.decode_batch_window_ms),
            max_batch_size=s.max_decode_batch_size, log_metrics=bool(s.log_metrics))
        self._vad_executor = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="vad")
        self.vad_pool: VadPool | None = None
        self._limits = stream_limits(config)
        self.buffer_ledger = BufferLedger(config.server.max_total_buffer_bytes)
        st = config.storage
        self.audio_store = (AudioStore(st.directory, st.queue_max_chunks, st.max_bytes, st.max_files, st.max_age_days)
                            if st.persist_audio else None)
        self.transcripts = TranscriptSink.from_config(config.logging)
        self.memory_budget = MemoryBudget.from_config(config.server.memory_budget_bytes,
                                                      config.server.memory_per_session_bytes)
        self._streams_done = asyncio.Event()
        self._streams_done.set()
        self._active_streams = 0
        self._orchestrators: set[StreamOrchestrator] = set()
        self.started_at = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------------

    def _set_state(self, state: Lifecycle) -> None:
        self.state = state
        log.info("appliance is %s", state.value)
        if self._on_state_change:
            self._on_state_change(state)

    def resolve_model(self) -> ResolvedModel:
        """Find and verify the model files (fast, so a bad model fails before any port opens)."""
        return resolve_model(str(self.config.model.name), self.config.model.model_dir)

    def load(self, resolved: ResolvedModel) -> None:
        """Load the model and the VAD and run a warm-up decode; blocking, before serving."""
        cfg = self.config
        started = time.perf_counter()
        self.backend = load_backend(
            cfg.model.backend, model_id=self.model_id, model_path=str(resolved.path), device=cfg.model.device,
            compute_type=cfg.model.compute_type, pool_size=cfg.model.pool_size, cpu_threads=cfg.model.cpu_threads,
            english_only=resolved.english_only, encode_window=cfg.model.encode_window)
        vad_slots = cfg.vad.model_pool_size or cfg.server.max_sessions
        self.vad_pool = VadPool(SileroOnnx(), initial_slots=vad_slots, max_slots=cfg.server.max_sessions,
                                growth_factor=cfg.vad.model_pool_growth_factor)
        if cfg.vad.model_prewarm:
            self.vad_pool.warm_up()
        if self.audio_store is not None:
            self.audio_store.start()
        # Warm-up decode: the first CTranslate2 call allocates its buffers; readiness waits for it.
        warm_up_audio = np.zeros(16_000, dtype=np.float32)
        self.backend.transcribe(warm_up_audio, cfg.decode_profiles[cfg.model.default_decode_profile],
                                language=None, task="transcribe")
        log.info("model %s (%s, %s) loaded from %s and warmed up in %.2f s", self.model_id, cfg.model.backend,
                 cfg.model.compute_type, resolved.source, time.perf_counter() - started)

    def mark_serving(self) -> None:
        self.memory_budget.mark_baseline()
        self._set_state(Lifecycle.SERVING)

    async def drain(self, timeout_sec: float) -> bool:
        """Refuse new sessions, end every stream's input (each still gets the final of its open
        utterance), and wait up to `timeout_sec` (<= 0: forever) for them; True when all ended."""
        self._set_state(Lifecycle.DRAINING)
        for orchestrator in list(self._orchestrators):
            orchestrator.close_input()
        try:
            await asyncio.wait_for(self._streams_done.wait(), timeout=timeout_sec if timeout_sec > 0 else None)
            return True
        except asyncio.TimeoutError:
            log.warning("drain timed out after %.1f s with %d streams still open", timeout_sec, self._active_streams)
            return False

    def close(self) -> None:
        self.scheduler.shutdown()
        if self.audio_store is not None:
            self.audio_store.close()
        if self.transcripts is not None:
            self.transcripts.close()
        self._vad_executor.shutdown(wait=False, cancel_futures=True)
        self._set_state(Lifecycle.STOPPED)

    # --- sessions -----------------------------------------------------------------------------

    def session_defaults(self) -> SessionDefaults:
        cfg = self.config
        return SessionDefaults(
            default_model_id=self.model_id, model_ids=(self.model_id,), decode_profiles=cfg.decode_profiles,
            default_decode_profile=cfg.model.default_decode_profile,
            language=(cfg.model.language or None), task=cfg.model.task,
            vad_silence_sec=float(cfg.vad.silence), vad_threshold=float(cfg.vad.threshold),
            emit_final_on_vad=bool(cfg.server.emit_final_on_vad))

    def create_session(self, request: SessionRequest, peer: str = "",
                       metadata: dict[str, str] | None = None) -> SessionSettings:
        """Admit (auth, rate, caps, memory) and register a session; every refusal has its code."""
        self._require_serving()
        if len(self.sessions) >= self.config.server.max_sessions:
            raise ApplianceError("ERR1007", f"server.max_sessions={self.config.server.max_sessions} sessions are active",
                                 retry_after_sec=1.0)
        self.memory_budget.admit_session(len(self.sessions))
        ticket = self.admission.admit(peer_ip(peer), metadata or {}, dict(request.attributes))
        try:
            settings = resolve_settings(request, self.session_defaults())
            self.sessions.add(settings, ticket)
        except BaseException:
            self.admission.release(ticket)
            raise
        return settings

    def _require_serving(self) -> None:
        if self.state is Lifecycle.DRAINING or self.state is Lifecycle.STOPPED:
            raise ApplianceError("ERR1015", "the server is draining and accepts no new sessions", retry_after_sec=5.0)
        if self.state is not Lifecycle.SERVING:
            raise ApplianceError("ERR1015", "the server is still starting", retry_after_sec=1.0)

    async def stream(self, chunks: AsyncIterable[AudioIn]) -> AsyncIterator[RecognitionResult]:
        """Run one StreamingRecognize call; the first chunk names the session."""
        iterator = chunks.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        if not first.session_id:
            raise ApplianceError("ERR1001", "the first chunk must carry the session_id returned by CreateSession")
        settings = self.sessions.start_stream(first.session_id)
        self._active_streams += 1
        self._streams_done.clear()
        vad = orchestrator = None
        try:
            vad = self.vad_pool.acquire()
            ticket = self.sessions.ticket(settings.session_id)
            orchestrator = StreamOrchestrator(settings, self._limits, vad=vad, backend=self.backend,
                                              scheduler=self.scheduler, vad_executor=self._vad_executor,
                                              ledger=self.buffer_ledger,
                                              audio_budget=self.admission.audio_budget(ticket) if ticket else None,
                                              on_audio=self._audio_recorder(settings.session_id),
                                              on_final=self._transcript_writer())
            self._orchestrators.add(orchestrator)
            if self.state is Lifecycle.DRAINING:
                orchestrator.close_input()
            async for result in orchestrator.results(_prepend(first, iterator)):
                yield result
        finally:
            if orchestrator is not None:
                self._orchestrators.discard(orchestrator)
            if vad is not None:
                self.vad_pool.release(vad)
            self.sessions.end(settings.session_id)
            if self.audio_store is not None:
                self.audio_store.end_session(settings.session_id)
            self._active_streams -= 1
            if self._active_streams == 0:
                self._streams_done.set()


    def _audio_recorder(self, session_id: str):
        store = self.audio_store
        return None if store is None else (lambda pcm16, rate_hz: store.put(session_id, pcm16, rate_hz))

    def _transcript_writer(self):
        sink = self.transcripts
        return None if sink is None else (
            lambda r: sink.write(r.session_id, r.utterance_index, r.text, r.start_sec, r.end_sec))


async def _prepend(first: AudioIn, rest: AsyncIterator[AudioIn]) -> AsyncIterator[AudioIn]:
    yield first
    async for item in rest:
        yield item
