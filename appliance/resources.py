"""Process memory: current RSS, the cgroup limit, and the budget that admission checks against."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.errors import ApplianceError

_CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
_NO_LIMIT_V1 = 1 << 60  # v1 reports "unlimited" as a huge page-aligned number


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (0 where /proc is missing, e.g. macOS)."""
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def cgroup_memory_limit_bytes(files=_CGROUP_LIMIT_FILES) -> int | None:
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            continue
        return None if value >= _NO_LIMIT_V1 else value
    return None


class MemoryBudget:
    """Refuses new sessions (ERR1014) before the process would pass its memory budget."""

    def __init__(self, budget_bytes: int | None, per_session_bytes: int, rss=rss_bytes):
        self.budget_bytes = budget_bytes or None
        self.per_session_bytes = per_session_bytes
        self._rss = rss
        self.baseline_bytes = 0

    def mark_baseline(self) -> None:
        """Record RSS once the model is loaded: sessions are projected on top of it."""
        self.baseline_bytes = self._rss()

    @classmethod
    def from_config(cls, configured_bytes: int | None, per_session_bytes: int) -> MemoryBudget:
        budget = cgroup_memory_limit_bytes() if configured_bytes is None else configured_bytes
        return cls(budget, per_session_bytes)

    def admit_session(self, active_sessions: int) -> None:
        """ERR1014 unless one more session fits. Sessions admitted in a burst have not grown yet, so
        the projection is the larger of the RSS now and baseline + per-session share of each."""
        if self.budget_bytes is None:
            return
        rss = self._rss()
        projected = max(rss, self.baseline_bytes + self.per_session_bytes * active_sessions)
        if projected + self.per_session_bytes > self.budget_bytes:
            raise ApplianceError(
                "ERR1014", f"memory budget: {projected / 2**20:.0f} MiB in use or reserved by {active_sessions} "
                f"sessions + {self.per_session_bytes / 2**20:.0f} MiB for a new one would pass "
                f"{self.budget_bytes / 2**20:.0f} MiB (server.memory_budget_bytes)", retry_after_sec=2.0)


    def admit_model(self, model_id: str, estimate_bytes: int | None) -> None:
        """ERR1014 when loading a model of `estimate_bytes` would pass the budget (the OOM killer
        would take every live stream with it). Unknown sizes (local paths) are not checked."""
        if self.budget_bytes is None or not estimate_bytes:
            return
        rss = self._rss()
        if rss + estimate_bytes > self.budget_bytes:
            raise ApplianceError(
                "ERR1014", f"loading {model_id} needs ~{estimate_bytes / 2**20:.0f} MiB on top of "
                f"{rss / 2**20:.0f} MiB in use; the memory budget is {self.budget_bytes / 2**20:.0f} MiB "
                "(server.memory_budget_bytes)")


class BufferLedger:
    """Audio buffered across all streams (as 16 kHz PCM16 bytes), capped by max_total_buffer_bytes."""

    def __init__(self, cap_bytes: int | None):
        self.cap_bytes = cap_bytes or None
        self.total_bytes = 0

    def admit(self, incoming_bytes: int) -> None:
        if self.cap_bytes is not None and self.total_bytes + incoming_bytes > self.cap_bytes:
            raise ApplianceError(
                "ERR1014", f"{self.total_bytes} bytes of audio are buffered across sessions; "
                f"server.max_total_buffer_bytes is {self.cap_bytes}", retry_after_sec=1.0)

    def apply(self, delta_bytes: int) -> None:
        self.total_bytes += delta_bytes
