"""A connection's deadlines, which chatter cannot extend.

A connection must finish its header (or first event) within `first_event_sec` of opening, and may
then sit at most `idle_sec` without progress. Progress is what the door exists for (audio, a
transcription request, a request body); chatter (describe, ping, keep-alive, a header byte now and
then) is allowed but resets nothing, so a client cannot hold a slot by talking about nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from appliance.errors import ApplianceError

T = TypeVar("T")


@dataclass(frozen=True)
class Deadlines:
    first_event_sec: float  # opening → the header / first event complete
    idle_sec: float  # the last progress → the next (chatter does not count)
    setting: str = "idle_timeout_sec"  # the config key named in the refusal


class ConnectionClock:
    def __init__(self, deadlines: Deadlines, clock: Callable[[], float] = time.monotonic):
        self.deadlines = deadlines
        self._clock = clock
        self.opened_at = clock()
        self._first_done = False
        self._progress_at = self.opened_at

    def first_event_done(self) -> None:
        """The header or first event is complete: from now on the idle deadline applies."""
        if not self._first_done:
            self._first_done = True
            self._progress_at = self._clock()

    def progress(self) -> None:
        """Real work arrived: the idle deadline starts again."""
        self.first_event_done()
        self._progress_at = self._clock()

    def remaining(self) -> float:
        """Seconds until the deadline that applies now (<= 0: passed)."""
        d = self.deadlines
        if not self._first_done:
            return self.opened_at + d.first_event_sec - self._clock()
        return self._progress_at + d.idle_sec - self._clock()

    def expired(self) -> ApplianceError:
        d = self.deadlines
        if not self._first_done:
            return ApplianceError("ERR1012", f"nothing complete within {d.first_event_sec:g} s of connecting")
        return ApplianceError("ERR1012", f"no progress within {d.idle_sec:g} s ({d.setting}); chatter does "
                              "not keep a connection open")

    async def within(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` until the current deadline; ERR1012 (from `expired`) past it."""
        left = self.remaining()
        if left <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise self.expired()
        try:
            return await asyncio.wait_for(awaitable, left)
        except TimeoutError:
            raise self.expired() from None
