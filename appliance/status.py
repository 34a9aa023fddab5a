"""The status facade the HTTP plane reads: the health verdict, the typed snapshot, /system, /metrics.

Read-only: it derives everything at the moment it is asked (nothing is cached or polled), from the
parts that own each figure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from appliance import __version__
from appliance.config import AppConfig
from appliance.lifecycle import HealthState
from appliance.models.registry import ModelRegistry
from appliance.observability.health import HealthReport
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.snapshot import (
    BufferLevels,
    DecodeLevels,
    MemoryLevels,
    SessionLevels,
    StatusSnapshot,
    VadPoolLevels,
)
from appliance.observability.system import memory_info, package_versions, platform_info
from appliance.resources import BufferLedger, MemoryBudget, rss_bytes
from appliance.scheduler import DecodeScheduler
from appliance.security import Admission, hash_api_key
from appliance.sessions import SessionService
from appliance.vad import VadPool


class StatusView:
    def __init__(self, config: AppConfig, *, health: HealthState, sessions: SessionService, models: ModelRegistry,
                 scheduler: DecodeScheduler, ledger: BufferLedger, memory_budget: MemoryBudget,
                 vad_pool: Callable[[], VadPool | None], admission: Admission, metrics: ApplianceMetrics,
                 hardware_report: dict | None = None):
        self._config = config
        self._health = health
        self._sessions = sessions
        self._models = models
        self._scheduler = scheduler
        self._ledger = ledger
        self._memory_budget = memory_budget
        self._vad_pool = vad_pool
        self._admission = admission
        self.metrics = metrics
        self.hardware_report = hardware_report or {}  # what `appliance.hardware` detected and chose at boot
        self._started_at = time.monotonic()

    def uptime_sec(self) -> float:
        return round(time.monotonic() - self._started_at, 3)

    def health(self) -> HealthReport:
        return self._health.report()

    def health_details(self) -> dict:
        """What an authorised /health adds to the verdict."""
        return {"models_loaded": len(self._models), "active_sessions": self._sessions.active_sessions,
                "uptime_sec": self.uptime_sec()}

    def exposition(self) -> bytes:
        return self.metrics.exposition()

    def snapshot(self) -> StatusSnapshot:
        cfg = self._config
        active = self._sessions.active_sessions  # first: counting expires unused sessions, freeing their slots
        per_ip, per_key = self._sessions.sessions_by_client()
        by_key = ({hash_api_key(key)[:12]: n for key, n in per_key.items()}
                  if cfg.metrics.expose_api_key_sessions else None)
        stats = self._scheduler.stats
        pool = self._vad_pool()
        return StatusSnapshot(
            state=self._health.state.value, health=self._health.report().status, uptime_sec=self.uptime_sec(),
            sessions=SessionLevels(active=active, streaming=self._sessions.active_streams,
                                   max=cfg.server.max_sessions, client_ips=len(per_ip),
                                   resumable=self._sessions.resumable_sessions, by_api_key=by_key),
            decode=DecodeLevels(
                queue_depth=self._scheduler.pending, in_flight=self._scheduler.in_flight,
                slots=self._scheduler.max_in_flight, decodes=stats.decodes, batches=stats.batches,
                partials_dropped=stats.partials_dropped, finals_timed_out=stats.finals_timed_out,
                failures=stats.failures, decode_sec_total=round(stats.decode_sec_total, 3),
                audio_sec_total=round(stats.audio_sec_total, 3),
                rtf=round(stats.decode_sec_total / stats.audio_sec_total, 4) if stats.audio_sec_total else None),
            buffers=BufferLevels(total_bytes=self._ledger.total_bytes, cap_bytes=self._ledger.cap_bytes),
            memory=MemoryLevels(rss_bytes=rss_bytes(), budget_bytes=self._memory_budget.budget_bytes,
                                baseline_bytes=self._memory_budget.baseline_bytes),
            vad_pool=VadPoolLevels(slots=pool.capacity if pool else 0, in_use=pool.leased if pool else 0,
                                   max=cfg.server.max_sessions),
            models=self._models.snapshot(),
            streams=self._sessions.stream_levels(),
            recent=self.metrics.recent_finals.summary(),
            totals=self.metrics.totals())

    def system(self) -> dict:
        """Everything an operator asks first: the box, the profile chosen for it, models, versions, memory."""
        cfg = self._config
        hardware = dict(self.hardware_report)
        return {
            "appliance": {"version": __version__, "state": self._health.state.value, "pid": os.getpid(),
                          "uptime_sec": self.uptime_sec()},
            "platform": platform_info(),
            "hardware": hardware,
            "profile": {"configured": cfg.model.profile, "chosen": hardware.get("profile", cfg.model.profile),
                        "warnings": list(hardware.get("warnings", []))},
            "models": self._models.snapshot(),
            "model_load_profiles": sorted(cfg.model_load_profiles),
            "default_model_load_profile": cfg.model.default_model_load_profile,
            "memory": memory_info(self._memory_budget.budget_bytes),
            "limits": {"max_sessions": cfg.server.max_sessions, "decode_slots": self._scheduler.max_in_flight,
                       "max_total_buffer_bytes": cfg.server.max_total_buffer_bytes},
            "versions": package_versions(),
        }
