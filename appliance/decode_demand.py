"""How busy the decoders are: a time-weighted moving average of decode demand.

Demand is (decodes running + decodes eligible and waiting for a slot) / slots: below 1 some slot is
idle part of the time, above 1 decodes queue. The scheduler reports each change of the level; the
average weighs every level by how long it lasted, so a burst of short decodes and one long decode
read alike. Partial cadence (appliance/streaming/cadence.py) reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

DEMAND_TIME_CONSTANT_SEC = 2.0  # long enough to span a few decodes, short enough to follow a load step


class DemandMeter:
    def __init__(self, time_constant_sec: float = DEMAND_TIME_CONSTANT_SEC,
                 clock: Callable[[], float] = time.monotonic):
        self._tau = time_constant_sec
        self._clock = clock
        self._level = 0.0  # the current instantaneous demand
        self._average = 0.0  # the average as of `_since`
        self._since = clock()

    def set_level(self, level: float) -> None:
        """The instantaneous demand changed to `level`."""
        now = self._clock()
        self._average = self._decayed(now)
        self._since = now
        self._level = level

    def value(self) -> float:
        """The average demand up to now."""
        return self._decayed(self._clock())

    def _decayed(self, now: float) -> float:
        keep = math.exp(-max(0.0, now - self._since) / self._tau)
        return self._average * keep + self._level * (1.0 - keep)
