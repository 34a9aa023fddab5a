"""What the scheduler reports: running totals (`SchedulerStats`, read by /metrics.json) and each
decode's outcome as it happens (`DecodeObserver`, for metrics and health)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SchedulerStats:
    decodes: int = 0
    batches: int = 0
    partials_dropped: int = 0
    finals_timed_out: int = 0
    failures: int = 0
    decode_sec_total: float = 0.0
    audio_sec_total: float = 0.0


class DecodeObserver:
    """Receives every decode outcome (metrics, health). Called on the event loop; must be quick.
    This base class ignores everything."""

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None: ...

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        """`outcome`: "timeout" (ERR1009: no slot in time, or the queue was full) or "failure" (ERR1016)."""

    def partials_dropped(self, count: int) -> None: ...
