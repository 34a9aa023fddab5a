"""Partial cadence that follows the decode load.

A partial is worth most when it is fresh and costs a full decode of the utterance so far, so its
cadence is set by how busy the decoders are (`DemandMeter`): with spare capacity partials come every
`fastest_sec`; as demand rises from LIGHT_DEMAND to FULL_DEMAND the interval stretches
geometrically to `slowest_sec`, so partials give way before finals queue behind them. An
utterance's first partial comes `first_sec` after its onset, plus whatever the load added to the
interval: a person at a kiosk sees the first words quickly while the box has room for it.
"""

from __future__ import annotations

from dataclasses import dataclass

LIGHT_DEMAND = 0.5  # decoders idle half the time or more: partials at the fastest cadence
FULL_DEMAND = 1.0  # every slot busy: partials at the slowest cadence


@dataclass(frozen=True)
class PartialCadence:
    first_sec: float  # speech after an utterance's onset before its first partial, with spare capacity
    fastest_sec: float  # interval between partials with spare capacity
    slowest_sec: float  # interval at full demand (== fastest_sec: a fixed cadence)

    def __post_init__(self) -> None:
        if not 0 < self.fastest_sec <= self.slowest_sec or self.first_sec <= 0:
            raise ValueError(f"partial cadence needs 0 < first_sec and 0 < fastest_sec <= slowest_sec: {self}")

    def interval_sec(self, demand: float) -> float:
        """Seconds of audio between partials at this decode demand."""
        if demand <= LIGHT_DEMAND or self.slowest_sec == self.fastest_sec:
            return self.fastest_sec
        if demand >= FULL_DEMAND:
            return self.slowest_sec
        fraction = (demand - LIGHT_DEMAND) / (FULL_DEMAND - LIGHT_DEMAND)
        return self.fastest_sec * (self.slowest_sec / self.fastest_sec) ** fraction

    def first_after_sec(self, demand: float) -> float:
        """Seconds of audio after an utterance's onset before its first partial at this demand."""
        return self.first_sec + self.interval_sec(demand) - self.fastest_sec
