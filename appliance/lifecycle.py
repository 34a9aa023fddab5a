"""The one owner of the appliance's lifecycle and health verdict: starting → serving → draining → stopped.

`HealthState` holds the lifecycle state and derives the `HealthReport` from it, the decode outcomes
of the last window and the loaded models; /health reads `report()` directly. Subscribers (gRPC
health, systemd's notify socket) are told each time the verdict changes: on a state change, after
a decode outcome, after a model is loaded or unloaded, and — because old outcomes age out of the
window without any event — at the moment the oldest outcome leaves it. Nothing polls.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable

from appliance.observability.health import DecodeHealth, HealthReport, Outcome, assess

log = logging.getLogger(__name__)


class Lifecycle(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


HealthSubscriber = Callable[[Lifecycle, HealthReport], None]


class HealthState:
    def __init__(self, decode_health: DecodeHealth, models_loaded: Callable[[], int]):
        self.decode_health = decode_health
        self._models_loaded = models_loaded
        self._state = Lifecycle.STARTING
        self._subscribers: list[HealthSubscriber] = []
        self._published: tuple[Lifecycle, str] | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop subscribers are called on

    @property
    def state(self) -> Lifecycle:
        return self._state

    def report(self) -> HealthReport:
        return assess(self._state.value, self.decode_health.window(), self._models_loaded())

    def subscribe(self, subscriber: HealthSubscriber) -> None:
        """`subscriber(state, report)` now and on every change; called on the event loop, must not block."""
        self._subscribers.append(subscriber)
        subscriber(self._state, self.report())

    def set_state(self, state: Lifecycle) -> None:
        if state is self._state:
            return
        self._state = state
        log.info("appliance is %s", state.value)
        self.changed()

    def record(self, outcome: Outcome) -> None:
        """A decode outcome (from the scheduler's observer, on the event loop)."""
        self.decode_health.record(outcome)
        self.changed()

    def changed_threadsafe(self) -> None:
        """`changed()` from any thread (the HTTP plane's model admin runs on waitress threads)."""
        loop = self._loop
        if loop is not None and loop.is_running() and _running_loop() is not loop:
            loop.call_soon_threadsafe(self.changed)
        else:
            self.changed()

    def changed(self) -> None:
        """Re-derive the verdict; tell the subscribers if it differs from what they were last told."""
        self._loop = _running_loop() or self._loop
        report = self.report()
        published = (self._state, report.status)
        if published != self._published:
            self._published = published
            for subscriber in self._subscribers:
                subscriber(self._state, report)
        self._schedule_recheck(report)

    def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def _schedule_recheck(self, report: HealthReport) -> None:
        """While the window holds outcomes that decide the verdict, look again when the oldest leaves."""
        if self._recheck is not None or not report.decodes.evaluated:
            return
        delay = self.decode_health.seconds_until_change()
        if delay is None:
            return
        loop = _running_loop()
        if loop is None:  # a synchronous caller: the next event re-derives the verdict
            return
        self._recheck = loop.call_later(delay + 0.01, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        self.changed()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
