"""Wires the appliance together and owns its lifecycle: starting -> serving -> draining -> stopped.

One `Lifecycle` state plus the decode outcomes give one `HealthReport` that gRPC health, HTTP
/health and the systemd watchdog all read. The transports call `create_session`, `stream`,
`health`, `snapshot`, `system_info` and the admin calls; everything beyond translation lives here
or below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from appliance.config import AppConfig
from appliance.config_schema import ModelLoadProfile
from appliance.errors import ApplianceError
from appliance.hardware.models import model_memory_bytes
from appliance.models.registry import LoadSettings, ModelRegistry, model_id_for
from appliance.models.store import ModelStoreError, ResolvedModel, resolve_model
from appliance.observability.health import DecodeHealth, HealthReport, HealthThresholds, Outcome, assess
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.transcripts import TranscriptSink
from appliance.resources import BufferLedger, MemoryBudget, rss_bytes
from appliance.scheduler import DecodeObserver, DecodeScheduler
from appliance.security import Admission, peer_ip
from appliance.security.auth import hash_api_key
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


def boot_profile(config: AppConfig) -> ModelLoadProfile:
    """The model the appliance loads at boot, from the (already profile-resolved) `model` section."""
    m = config.model
    return ModelLoadProfile(model_size=str(m.name), backend=m.backend, device=m.device,
                            compute_type=m.compute_type, pool_size=m.pool_size)


class _DecodeOutcomes(DecodeObserver):
    """Feeds scheduler outcomes to the metrics and the health window."""

    def __init__(self, metrics: ApplianceMetrics, health: DecodeHealth):
        self._metrics = metrics
        self._health = health

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None:
        self._metrics.decode_done(is_final=is_final, decode_sec=decode_sec, audio_sec=audio_sec, wait_sec=wait_sec)
        self._health.record(Outcome.SUCCESS)

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        self._metrics.decode_failed(is_final=is_final, outcome=outcome)
        self._health.record(Outcome.TIMEOUT if outcome == "timeout" else Outcome.FAILURE)

    def partials_dropped(self, count: int) -> None:
        self._metrics.partials_dropped(count)


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
        # What `appliance.hardware` detected and chose at boot (shown by /system and `detect`).
        self.hardware_report = hardware_report or {}
        self.state = Lifecycle.STARTING
        self._on_state_change = on_state_change
        self.boot_model_id = model_id_for(config.model.device, str(config.model.name))
        self.models = ModelRegistry()
        self.decode_health = DecodeHealth(HealthThresholds(**vars(config.health)))
        self.metrics = ApplianceMetrics(snapshot=self.snapshot)
        self.admission = Admission(config.server, config.auth)
        self.sessions = SessionRegistry(unused_ttl_sec=float(config.server.session_timeout_sec or 60),
                                        on_release=self.admission.release)
        s = config.server
        self.scheduler = DecodeScheduler(
            max_in_flight=config.model.pool_size, max_pending_global=s.max_pending_decodes_global,
            queue_timeout_sec=float(s.decode_queue_timeout_sec), batch_window_ms=float(s.decode_batch_window_ms),
            max_batch_size=s.max_decode_batch_size, log_metrics=bool(s.log_metrics),
            observer=_DecodeOutcomes(self.metrics, self.decode_health))
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

    @property
    def model_id(self) -> str:
        """The default model's id (sessions that name no model_id get it)."""
        return self.models.default_id or self.boot_model_id

    # --- lifecycle ----------------------------------------------------------------------------

    def _set_state(self, state: Lifecycle) -> None:
        self.state = state
        log.info("appliance is %s", state.value)
        if self._on_state_change:
            self._on_state_change(state)

    def resolve_model(self) -> ResolvedModel:
        """Find and verify the model files (fast, so a bad model fails before any port opens)."""
        return resolve_model(str(self.config.model.name), self.config.model.model_dir)

    def load_settings(self) -> LoadSettings:
        cfg = self.config
        return LoadSettings(cpu_threads=cfg.model.cpu_threads, encode_window=cfg.model.encode_window,
                            warm_up_options=cfg.decode_profiles[cfg.model.default_decode_profile])

    def load(self, resolved: ResolvedModel) -> None:
        """Load the boot model and the VAD and run a warm-up decode; blocking, before serving."""
        cfg = self.config
        self.models.load(self.boot_model_id, cfg.model.profile, boot_profile(cfg), self.load_settings(),
                         resolved=resolved, make_default=True)
        vad_slots = cfg.vad.model_pool_size or cfg.server.max_sessions
        self.vad_pool = VadPool(SileroOnnx(), initial_slots=vad_slots, max_slots=cfg.server.max_sessions,
                                growth_factor=cfg.vad.model_pool_growth_factor)
        if cfg.vad.model_prewarm:
            self.vad_pool.warm_up()
        if self.audio_store is not None:
            self.audio_store.start()

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
            default_model_id=self.model_id, model_ids=self.models.ids(), decode_profiles=cfg.decode_profiles,
            default_decode_profile=cfg.model.default_decode_profile,
            language=(cfg.model.language or None), task=cfg.model.task,
            vad_silence_sec=float(cfg.vad.silence), vad_threshold=float(cfg.vad.threshold),
            emit_final_on_vad=bool(cfg.server.emit_final_on_vad))

    def create_session(self, request: SessionRequest, peer: str = "",
                       metadata: dict[str, str] | None = None) -> SessionSettings:
        """Admit (auth, rate, caps, memory) and register a session; every refusal has its code."""
        try:
            settings = self._admit(request, peer, metadata)
        except ApplianceError as err:
            self.metrics.error(err.code, "create_session")
            raise
        self.metrics.session_created()
        return settings

    def _admit(self, request: SessionRequest, peer: str, metadata: dict[str, str] | None) -> SessionSettings:
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
        try:
            settings = self.sessions.start_stream(first.session_id)
        except ApplianceError as err:
            self.metrics.error(err.code, "stream")
            raise
        self._active_streams += 1
        self._streams_done.clear()
        vad = orchestrator = model = None
        try:
            model = self.models.acquire(settings.model_id)
            vad = self.vad_pool.acquire()
            ticket = self.sessions.ticket(settings.session_id)
            orchestrator = StreamOrchestrator(settings, self._limits, vad=vad, backend=model.backend,
                                              scheduler=self.scheduler, vad_executor=self._vad_executor,
                                              ledger=self.buffer_ledger,
                                              audio_budget=self.admission.audio_budget(ticket) if ticket else None,
                                              on_audio=self._audio_recorder(settings.session_id),
                                              on_final=self._transcript_writer())
            self._orchestrators.add(orchestrator)
            if self.state is Lifecycle.DRAINING:
                orchestrator.close_input()
            async for result in orchestrator.results(_prepend(first, iterator)):
                self.metrics.result_sent(
                    is_final=result.is_final, latency_sec=result.queued_to_sent_sec,
                    rtf=result.decode_latency_sec / result.decoded_audio_sec if result.decoded_audio_sec else None)
                yield result
        except ApplianceError as err:
            self.metrics.error(err.code, "stream")
            raise
        finally:
            if orchestrator is not None:
                self._orchestrators.discard(orchestrator)
            if vad is not None:
                self.vad_pool.release(vad)
            if model is not None:
                self.models.release(model)
            self.sessions.end(settings.session_id)
            if self.audio_store is not None:
                self.audio_store.end_session(settings.session_id)
            self._active_streams -= 1
            if self._active_streams == 0:
                self._streams_done.set()

    # --- admin: models ------------------------------------------------------------------------

    def load_model(self, profile_id: str | None = None, *, model_id: str | None = None,
                   model_size: str | None = None) -> tuple[dict, bool]:
        """Load a model by load profile (blocking; run it off the event loop). Live streams keep
        running: the new model joins the registry only after its warm-up decode."""
        cfg = self.config
        profile_id = profile_id or cfg.model.default_model_load_profile
        profile = cfg.model_load_profiles.get(profile_id)
        if profile is None:
            raise ApplianceError("ERR1010", f"unknown model load profile {profile_id!r} "
                                 f"(model_load_profiles: {', '.join(sorted(cfg.model_load_profiles))})")
        if model_size:
            profile = dataclasses.replace(profile, model_size=model_size)
        model_id = model_id or model_id_for(profile.device, profile.model_size)
        if self.models.get(model_id) is None:
            self.memory_budget.admit_model(model_id, model_memory_bytes(
                os.path.basename(str(profile.model_size).rstrip("/")), profile.compute_type, profile.pool_size))
        try:
            model, created = self.models.load(model_id, profile_id, profile, self.load_settings())
        except ModelStoreError as err:
            raise ApplianceError("ERR1010", f"model {profile.model_size!r} cannot be used: {err}") from None
        except ApplianceError:
            raise
        except Exception as err:  # the backend refused (device missing, bad weights): one code, logged
            log.exception("loading model %s failed", model_id)
            raise ApplianceError("ERR1016", f"loading {model_id} failed: {type(err).__name__}: {err}") from None
        return model.to_dict(), created

    def unload_model(self, model_id: str, *, drain: bool = False) -> str:
        return self.models.unload(model_id, drain=drain)

    # --- observability ------------------------------------------------------------------------

    def health(self) -> HealthReport:
        return assess(self.state.value, self.decode_health.window(), len(self.models))

    def uptime_sec(self) -> float:
        return round(time.monotonic() - self.started_at, 3)

    def snapshot(self) -> dict:
        """Levels right now: what /metrics.json returns and the Prometheus gauges read."""
        cfg = self.config
        per_ip, per_key = self.admission.active_sessions()
        sessions = {"active": len(self.sessions), "streaming": self._active_streams,
                    "max": cfg.server.max_sessions, "client_ips": len(per_ip)}
        if cfg.metrics.expose_api_key_sessions:
            sessions["by_api_key"] = {hash_api_key(key)[:12]: n for key, n in per_key.items()}
        stats = self.scheduler.stats
        pool = self.vad_pool
        return {
            "state": self.state.value,
            "health": self.health().status,
            "uptime_sec": self.uptime_sec(),
            "sessions": sessions,
            "decode": {"queue_depth": self.scheduler.pending, "in_flight": self.scheduler.in_flight,
                       "slots": self.scheduler.max_in_flight, "decodes": stats.decodes, "batches": stats.batches,
                       "partials_dropped": stats.partials_dropped, "finals_timed_out": stats.finals_timed_out,
                       "failures": stats.failures, "decode_sec_total": round(stats.decode_sec_total, 3),
                       "audio_sec_total": round(stats.audio_sec_total, 3),
                       "rtf": round(stats.decode_sec_total / stats.audio_sec_total, 4) if stats.audio_sec_total else None},
            "buffers": {"total_bytes": self.buffer_ledger.total_bytes, "cap_bytes": self.buffer_ledger.cap_bytes},
            "memory": {"rss_bytes": rss_bytes(), "budget_bytes": self.memory_budget.budget_bytes,
                       "baseline_bytes": self.memory_budget.baseline_bytes},
            "vad_pool": {"slots": pool.capacity if pool else 0, "in_use": pool.leased if pool else 0,
                         "max": cfg.server.max_sessions},
            "models": self.models.snapshot(),
            # Per-stream figures under a hash of the session id: visible load, no usable ids.
            "streams": [{"stream": hashlib.sha256(o.session_id.encode()).hexdigest()[:10]} | o.progress()
                        for o in list(self._orchestrators)],
            "recent": self.metrics.recent_finals.summary(),
            "totals": self.metrics.totals(),
        }


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
