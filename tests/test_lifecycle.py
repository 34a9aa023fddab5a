"""HealthState: the one owner of the lifecycle and the health verdict, published as it changes."""

from __future__ import annotations

import asyncio

from appliance.lifecycle import HealthState, Lifecycle
from appliance.observability.health import DecodeHealth, HealthThresholds, Outcome


def health_state(models: int = 1, window_sec: float = 60.0) -> tuple[HealthState, list[tuple[str, str]]]:
    state = HealthState(DecodeHealth(HealthThresholds(window_sec=window_sec, min_events=5)),
                        models_loaded=lambda: models)
    seen: list[tuple[str, str]] = []
    state.subscribe(lambda lifecycle, report: seen.append((lifecycle.value, report.status)))
    return state, seen


def test_subscribers_hear_each_state_once_in_order():
    state, seen = health_state()
    for lifecycle in (Lifecycle.SERVING, Lifecycle.SERVING, Lifecycle.DRAINING, Lifecycle.STOPPED):
        state.set_state(lifecycle)
    assert seen == [("starting", "starting"), ("serving", "ok"), ("draining", "draining"), ("stopped", "stopped")]


def test_decode_outcomes_change_the_verdict_only_when_it_changes():
    state, seen = health_state()
    state.set_state(Lifecycle.SERVING)
    for _ in range(4):
        state.record(Outcome.TIMEOUT)  # fewer than min_events: no verdict yet
    assert seen[-1] == ("serving", "ok")
    state.record(Outcome.TIMEOUT)
    state.record(Outcome.TIMEOUT)
    assert seen[-1] == ("serving", "degraded") and seen.count(("serving", "degraded")) == 1
    assert any("timed out" in reason for reason in state.report().reasons)


def test_a_degraded_verdict_recovers_by_itself_when_its_outcomes_leave_the_window():
    async def scenario():
        state, seen = health_state(window_sec=0.3)
        state.set_state(Lifecycle.SERVING)
        for _ in range(5):
            state.record(Outcome.FAILURE)
        degraded = seen[-1]
        for _ in range(40):  # bounded: 2 s at most; no event arrives, only the recheck timer
            if seen[-1] == ("serving", "ok"):
                break
            await asyncio.sleep(0.05)
        state.close()
        return degraded, seen[-1]

    degraded, last = asyncio.run(scenario())
    assert degraded == ("serving", "degraded") and last == ("serving", "ok")


def test_no_model_loaded_is_degraded():
    state, seen = health_state(models=0)
    state.set_state(Lifecycle.SERVING)
    assert seen[-1] == ("serving", "degraded") and "no model is loaded" in state.report().reasons


def test_decodes_that_failed_on_a_sessions_own_options_do_not_degrade_health():
    from prometheus_client import CollectorRegistry

    from appliance.observability.metrics import ApplianceMetrics
    from appliance.runtime import _DecodeOutcomes

    state, seen = health_state()
    state.set_state(Lifecycle.SERVING)
    outcomes = _DecodeOutcomes(ApplianceMetrics(CollectorRegistry()), state)
    for _ in range(20):
        outcomes.decode_failed(is_final=True, outcome="client")
    assert seen[-1] == ("serving", "ok")
    for _ in range(6):
        outcomes.decode_failed(is_final=True, outcome="failure")
    assert seen[-1] == ("serving", "degraded")
