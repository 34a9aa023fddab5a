"""Partial cadence from decode demand: the mapping, and the meter that measures demand over time."""

from __future__ import annotations

import pytest

from appliance.decode_demand import DemandMeter
from appliance.streaming.cadence import FULL_DEMAND, LIGHT_DEMAND, PartialCadence

CADENCE = PartialCadence(first_sec=0.5, fastest_sec=0.5, slowest_sec=3.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_spare_capacity_gets_the_fastest_cadence_and_full_demand_the_slowest():
    assert CADENCE.interval_sec(0.0) == CADENCE.interval_sec(LIGHT_DEMAND) == 0.5
    assert CADENCE.interval_sec(FULL_DEMAND) == CADENCE.interval_sec(4.0) == 3.0


def test_the_interval_stretches_steadily_with_demand():
    demands = [LIGHT_DEMAND + i * (FULL_DEMAND - LIGHT_DEMAND) / 10 for i in range(11)]
    intervals = [CADENCE.interval_sec(d) for d in demands]
    assert intervals == sorted(intervals) and len(set(intervals)) == 11
    midway = CADENCE.interval_sec((LIGHT_DEMAND + FULL_DEMAND) / 2)
    assert midway == pytest.approx((0.5 * 3.0) ** 0.5)  # geometric: each step stretches it by one ratio


def test_the_first_partial_waits_its_own_delay_plus_what_the_load_adds():
    cadence = PartialCadence(first_sec=0.4, fastest_sec=1.0, slowest_sec=2.0)
    assert cadence.first_after_sec(0.0) == pytest.approx(0.4)
    assert cadence.first_after_sec(FULL_DEMAND) == pytest.approx(1.4)


def test_a_fixed_cadence_ignores_demand():
    fixed = PartialCadence(first_sec=1.5, fastest_sec=1.5, slowest_sec=1.5)
    assert {fixed.interval_sec(d) for d in (0.0, 0.7, 1.0, 9.0)} == {1.5}


@pytest.mark.parametrize("fields", [dict(first_sec=0.5, fastest_sec=0.0, slowest_sec=1.0),
                                    dict(first_sec=0.5, fastest_sec=2.0, slowest_sec=1.0),
                                    dict(first_sec=0.0, fastest_sec=1.0, slowest_sec=1.0)])
def test_an_impossible_cadence_is_refused(fields):
    with pytest.raises(ValueError):
        PartialCadence(**fields)


def test_demand_is_weighted_by_how_long_each_level_lasted():
    clock = Clock()
    meter = DemandMeter(time_constant_sec=2.0, clock=clock)
    assert meter.value() == 0.0
    meter.set_level(1.0)
    clock.now += 2.0  # one time constant at full demand
    assert meter.value() == pytest.approx(1 - 2.718281828 ** -1, rel=1e-6)
    clock.now += 20.0
    assert meter.value() == pytest.approx(1.0, abs=1e-4)
    meter.set_level(0.0)
    clock.now += 0.1  # a short idle moment barely moves it
    assert meter.value() > 0.9
    clock.now += 20.0
    assert meter.value() == pytest.approx(0.0, abs=1e-4)


def test_a_burst_of_level_changes_at_one_instant_counts_only_the_last():
    clock = Clock()
    meter = DemandMeter(time_constant_sec=2.0, clock=clock)
    for level in (5.0, 0.0, 5.0, 0.5):
        meter.set_level(level)
    clock.now += 100.0
    assert meter.value() == pytest.approx(0.5)
