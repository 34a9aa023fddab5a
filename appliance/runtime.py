"""Wires the appliance together (config → parts → facades) and drives its lifecycle.

The split follows uvicorn's Config → Server: `Runtime(config)` builds every shared part and the
three facades the transports get — `sessions` (SessionService, for the gRPC servicer), `admin`
(ModelAdmin) and `status` (StatusView, for the HTTP plane) — and `health` (HealthState), the one
owner of the lifecycle state. `load`, `mark_serving`, `drain` and `close` move it through
starting → serving → draining → stopped; `appliance.server.ApplianceServer` calls them in that order.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from appliance.config import AppConfig
from appliance.config_schema import ModelLoadProfile
from appliance.errors import ApplianceError
from appliance.frontdoor import DrainGate
from appliance.lifecycle import HealthState, Lifecycle
from appliance.model_admin import ModelAdmin
from appliance.models.registry import LoadSettings, ModelRegistry, model_id_for
from appliance.models.store import ResolvedModel, resolve_model
from appliance.observability.health import DecodeHealth, HealthThresholds, Outcome
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.transcripts import TranscriptSink
from appliance.resources import BufferLedger, MemoryBudget
from appliance.scheduler import DecodeObserver, DecodeScheduler
from appliance.security import Admission
from appliance.security.api_keys import allowed_key_digests
from appliance.security.tickets import TicketSigner
from appliance.session_table import SessionTable, TableLimits
from appliance.sessions import SessionService, StreamBuilder
from appliance.status import StatusView
from appliance.storage import AudioStore
from appliance.streaming.listeners import StreamListener, StreamListeners
from appliance.streaming.subscribers import AudioRecorder, StreamMetrics, TranscriptWriter
from appliance.streaming.types import StreamLimits
from appliance.vad import SileroOnnx, VadPool

log = logging.getLogger(__name__)

__all__ = ["Lifecycle", "Runtime", "boot_profile", "stream_limits"]


def boot_profile(config: AppConfig) -> ModelLoadProfile:
    """The model the appliance loads at boot, from the (already profile-resolved) `model` section."""
    m = config.model
    return ModelLoadProfile(model_size=str(m.name), backend=m.backend, device=m.device,
                            compute_type=m.compute_type, pool_size=m.pool_size)


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
        partial_interval_max_sec=s.partial_decode_interval_max_sec,
        partial_first_sec=s.partial_first_decode_sec,
        partial_window_sec=float(s.partial_decode_window_sec),
        speech_rms_threshold=float(config.safety.speech_rms_threshold),
        max_audio_sec_per_session=s.max_audio_seconds_per_session or None,
        max_batch_upload_bytes=s.max_batch_upload_bytes or None,
        max_chunks_per_sec=float(s.max_chunks_per_sec),
        max_pending_per_stream=int(s.max_pending_decodes_per_stream),
        partial_skip_unchanged=bool(s.partial_skip_unchanged),
        speculative_finals=str(s.speculative_finals),
    )


class _DecodeOutcomes(DecodeObserver):
    """Feeds scheduler outcomes to the metrics and the health verdict."""

    def __init__(self, metrics: ApplianceMetrics, health: HealthState):
        self._metrics = metrics
        self._health = health

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None:
        self._metrics.decode_done(is_final=is_final, decode_sec=decode_sec, audio_sec=audio_sec, wait_sec=wait_sec)
        self._health.record(Outcome.SUCCESS)

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        self._metrics.decode_failed(is_final=is_final, outcome=outcome)
        if outcome == "client":
            return  # the session's own decode options failed or overran: not the appliance's health
        self._health.record(Outcome.TIMEOUT if outcome == "timeout" else Outcome.FAILURE)

    def partials_dropped(self, count: int) -> None:
        self._metrics.partials_dropped(count)


class Runtime:
    def __init__(self, config: AppConfig, *, hardware_report: dict | None = None,
                 registry: CollectorRegistry | None = None):
        self.config = config
        s = config.server
        self.boot_model_id = model_id_for(config.model.device, str(config.model.name))
        self.models = ModelRegistry()
        self.drain_gate = DrainGate()  # every door and the session service read this one switch
        self.health = HealthState(DecodeHealth(HealthThresholds(**vars(config.health))),
                                  models_loaded=self.models.__len__)
        self.metrics = ApplianceMetrics(registry or CollectorRegistry(auto_describe=True),
                                        snapshot=lambda: self.status.snapshot())
        self.scheduler = DecodeScheduler(
            max_in_flight=config.model.pool_size, max_pending_global=s.max_pending_decodes_global,
            queue_timeout_sec=float(s.decode_queue_timeout_sec), batch_window_ms=float(s.decode_batch_window_ms),
            max_batch_size=s.max_decode_batch_size, log_metrics=bool(s.log_metrics),
            observer=_DecodeOutcomes(self.metrics, self.health), max_decode_sec=float(s.max_decode_sec),
            final_reserved_slots=s.decode_final_reserved_slots)
        self.vad_pool: VadPool | None = None
        self._vad_executor = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="vad")
        self.buffer_ledger = BufferLedger(s.max_total_buffer_bytes)
        self.memory_budget = MemoryBudget.from_config(s.memory_budget_bytes, s.memory_per_session_bytes)
        self.admission = Admission(s, config.auth, allowed_api_keys=allowed_key_digests(config.auth))
        if config.auth.create_session_auth_profile == "api_key" and config.auth.allowed_api_keys is None \
                and not config.auth.allowed_api_keys_file:
            log.warning("auth: api_key profile without auth.allowed_api_keys: any well-formed key is accepted")
        st = config.storage
        self.audio_store = (AudioStore(st.directory, st.queue_max_chunks, st.max_bytes, st.max_files, st.max_age_days,
                                       queue_max_bytes=st.queue_max_bytes)
                            if st.persist_audio else None)
        self.transcripts = TranscriptSink.from_config(config.logging)
        streams = StreamBuilder(stream_limits(config), self.models, self._leased_vad_pool, self.scheduler,
                                self._vad_executor, self.buffer_ledger, StreamListeners(self._listeners()),
                                self.admission)
        self.sessions = SessionService(
            config, health=self.health, admission=self.admission, memory_budget=self.memory_budget,
            table=SessionTable(TableLimits.from_config(s)), drain_gate=self.drain_gate,
            streams=streams, metrics=self.metrics, tickets=TicketSigner(config.auth.session_ticket_secret))
        self.admin = ModelAdmin(config, self.models, self.memory_budget, self.load_settings,
                                on_change=self.health.changed_threadsafe)
        self.status = StatusView(config, health=self.health, sessions=self.sessions, models=self.models,
                                 scheduler=self.scheduler, ledger=self.buffer_ledger, memory_budget=self.memory_budget,
                                 vad_pool=lambda: self.vad_pool, admission=self.admission, metrics=self.metrics,
                                 hardware_report=hardware_report)

    def _listeners(self) -> list[StreamListener]:
        listeners: list[StreamListener] = [StreamMetrics(self.metrics)]
        if self.audio_store is not None:
            listeners.append(AudioRecorder(self.audio_store))
        if self.transcripts is not None:
            listeners.append(TranscriptWriter(self.transcripts))
        return listeners

    def _leased_vad_pool(self) -> VadPool:
        if self.vad_pool is None:
            raise ApplianceError("ERR1015", "the server is still starting", retry_after_sec=1.0)
        return self.vad_pool

    @property
    def state(self) -> Lifecycle:
        return self.health.state

    @property
    def model_id(self) -> str:
        """The default model's id (sessions that name no model_id get it)."""
        return self.models.default_id or self.boot_model_id

    # --- lifecycle ----------------------------------------------------------------------------

    def resolve_model(self) -> ResolvedModel:
        """Find and verify the model files (fast, so a bad model fails before any port opens)."""
        return resolve_model(str(self.config.model.name), self.config.model.model_dir)

    def load_settings(self) -> LoadSettings:
        cfg = self.config
        return LoadSettings(cpu_threads=cfg.model.cpu_threads, encode_window=cfg.model.encode_window,
                            second_look_below=cfg.model.second_look_below,
                            languages=tuple(cfg.model.languages or ()),
                            warm_up_options=cfg.decode_profiles[cfg.model.default_decode_profile])

    def load(self, resolved: ResolvedModel) -> None:
        """Load the boot model and the VAD and run a warm-up decode; blocking, before serving."""
        cfg = self.config
        self.models.load(self.boot_model_id, cfg.model.profile, boot_profile(cfg), self.load_settings(),
                         resolved=resolved, make_default=True)
        vad_slots = cfg.vad.model_pool_size or cfg.server.max_sessions
        pool = VadPool(SileroOnnx(), initial_slots=vad_slots, max_slots=cfg.server.max_sessions,
                       growth_factor=cfg.vad.model_pool_growth_factor)
        if cfg.vad.model_prewarm:
            pool.warm_up()
        self.vad_pool = pool
        if self.audio_store is not None:
            self.audio_store.start()

    def mark_serving(self) -> None:
        self.memory_budget.mark_baseline()
        self.health.set_state(Lifecycle.SERVING)

    def announce_drain(self) -> None:
        """Report draining (/health, gRPC health, systemd) while still taking sessions: a load
        balancer's health check moves new traffic away before `drain` refuses it."""
        self.health.set_state(Lifecycle.DRAINING)

    async def drain(self, timeout_sec: float) -> bool:
        """Refuse new sessions, end every stream's input (SessionService.drain), and wait up to
        `timeout_sec` (<= 0: forever) for them; True when all ended."""
        self.health.set_state(Lifecycle.DRAINING)
        self.drain_gate.close()  # every door refuses new work from here on
        return await self.sessions.drain(timeout_sec)

    def close(self) -> None:
        self.scheduler.shutdown()
        if self.audio_store is not None:
            self.audio_store.close()
        if self.transcripts is not None:
            self.transcripts.close()
        self._vad_executor.shutdown(wait=False, cancel_futures=True)
        self.health.set_state(Lifecycle.STOPPED)
        self.health.close()
