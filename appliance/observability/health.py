"""Health: is the appliance doing its job right now?

Two inputs decide it. The lifecycle (starting, serving, draining) says whether the appliance takes
work at all. Decode outcomes over the last `health.window_sec` say whether the work it takes gets
done: with at least `min_events` outcomes in the window, it is degraded when the share of timed-out
decodes exceeds `max_timeout_ratio` or the share of successful ones falls below `min_success_ratio`.
Fewer events than `min_events` say nothing (a quiet appliance is a healthy one).

`/health`, the gRPC health service and the systemd watchdog all read the same `HealthReport`, so
they cannot disagree.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_EVENTS = 100_000  # bounds memory under a decode storm; older events fall out of the window anyway


class Outcome(enum.Enum):
    SUCCESS = "success"
    TIMEOUT = "timeout"  # a final waited past decode_queue_timeout_sec or the queue was full (ERR1009)
    FAILURE = "failure"  # the backend raised (ERR1016)


@dataclass(frozen=True)
class HealthThresholds:
    window_sec: float = 60.0
    min_events: int = 5
    max_timeout_ratio: float = 0.5
    min_success_ratio: float = 0.5


@dataclass(frozen=True)
class DecodeWindow:
    """Counts of decode outcomes in the window and the verdict they give."""

    events: int
    successes: int
    timeouts: int
    failures: int
    window_sec: float
    evaluated: bool  # False: fewer than min_events, ratios not applied
    degraded_reasons: tuple[str, ...] = ()

    @property
    def success_ratio(self) -> float | None:
        return self.successes / self.events if self.events else None

    @property
    def timeout_ratio(self) -> float | None:
        return self.timeouts / self.events if self.events else None


class DecodeHealth:
    """Rolling window of decode outcomes with running counts (O(1) per outcome, so the verdict can
    be re-read after every decode). Thread-safe: recorded on the event loop, read by HTTP threads."""

    def __init__(self, thresholds: HealthThresholds, clock: Callable[[], float] = time.monotonic):
        self.thresholds = thresholds
        self._clock = clock
        self._events: deque[tuple[float, Outcome]] = deque()
        self._counts = dict.fromkeys(Outcome, 0)
        self._lock = threading.Lock()

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            self._events.append((self._clock(), outcome))
            self._counts[outcome] += 1
            if len(self._events) > MAX_EVENTS:
                self._counts[self._events.popleft()[1]] -= 1

    def seconds_until_change(self) -> float | None:
        """When the oldest outcome leaves the window (the verdict may change then by itself)."""
        with self._lock:
            self._trim()
            if not self._events:
                return None
            return max(0.0, self._events[0][0] + self.thresholds.window_sec - self._clock())

    def _trim(self) -> None:
        horizon = self._clock() - self.thresholds.window_sec
        while self._events and self._events[0][0] < horizon:
            self._counts[self._events.popleft()[1]] -= 1

    def window(self) -> DecodeWindow:
        t = self.thresholds
        with self._lock:
            self._trim()
            successes = self._counts[Outcome.SUCCESS]
            timeouts = self._counts[Outcome.TIMEOUT]
            failures = self._counts[Outcome.FAILURE]
        events = successes + timeouts + failures
        evaluated = events >= max(1, t.min_events)
        reasons: list[str] = []
        if evaluated:
            if timeouts / events > t.max_timeout_ratio:
                reasons.append(f"{timeouts} of {events} decodes in the last {t.window_sec:g} s timed out "
                               f"(health.max_timeout_ratio {t.max_timeout_ratio:g})")
            if successes / events < t.min_success_ratio:
                reasons.append(f"only {successes} of {events} decodes in the last {t.window_sec:g} s succeeded "
                               f"(health.min_success_ratio {t.min_success_ratio:g})")
        return DecodeWindow(events, successes, timeouts, failures, t.window_sec, evaluated, tuple(reasons))


@dataclass(frozen=True)
class HealthReport:
    status: str  # ok | degraded | starting | draining | stopped
    reasons: tuple[str, ...]
    decodes: DecodeWindow
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = self.decodes
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "decodes": {"window_sec": d.window_sec, "events": d.events, "successes": d.successes,
                        "timeouts": d.timeouts, "failures": d.failures, "evaluated": d.evaluated,
                        "success_ratio": d.success_ratio, "timeout_ratio": d.timeout_ratio},
            **self.details,
        }


def assess(lifecycle: str, decodes: DecodeWindow, models_loaded: int, details: dict | None = None) -> HealthReport:
    """Combine the lifecycle, the decode window and the model registry into one verdict."""
    if lifecycle != "serving":
        reason = {"starting": "the model is loading or warming up",
                  "draining": "the server is draining: it stops taking sessions after server.drain_notice_sec",
                  "stopped": "the server has stopped"}.get(lifecycle, lifecycle)
        return HealthReport(lifecycle, (reason,), decodes, details or {})
    reasons = list(decodes.degraded_reasons)
    if models_loaded == 0:
        reasons.append("no model is loaded")
    return HealthReport("degraded" if reasons else "ok", tuple(reasons), decodes, details or {})
