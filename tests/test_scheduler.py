"""The decode scheduler with the real model: fairness, finals first, dropping, timeouts, batching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.config import default_config_paths, load_config
from appliance.errors import ApplianceError
from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.scheduler import DecodeObserver, DecodeScheduler

OPTIONS = load_config(*default_config_paths()).decode_profiles["realtime"]


@pytest.fixture(scope="module")
def backend():
    return FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                english_only=True)


@pytest.fixture(scope="module")
def audio(prompt_audio):
    return prompt_audio


def run(coro):
    return asyncio.run(coro)


def test_round_robin_serves_a_second_stream_before_the_first_streams_backlog(backend, audio):
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        order: list[str] = []

        async def decode(stream: str, label: str):
            await scheduler.decode(backend, audio, OPTIONS, language=None, task="transcribe", is_final=True,
                                   stream_id=stream)
            order.append(label)

        flood = [asyncio.create_task(decode("flood", f"flood-{i}")) for i in range(4)]
        await asyncio.sleep(0)  # the flood stream queues first
        quiet = asyncio.create_task(decode("quiet", "quiet"))
        await asyncio.gather(*flood, quiet)
        scheduler.shutdown()
        return order

    order = run(scenario())
    assert order.index("quiet") <= 1, order


def test_finals_go_first_and_partials_drop_under_pressure(backend, audio):
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        order: list[str] = []

        async def decode(stream: str, is_final: bool):
            result = await scheduler.decode(backend, audio, OPTIONS, language=None, task="transcribe",
                                            is_final=is_final, stream_id=stream)
            order.append(f"{stream}:{'final' if is_final else 'partial'}:{'dropped' if result is None else 'ok'}")

        busy = asyncio.create_task(decode("a", True))  # takes the only slot
        await asyncio.sleep(0.01)
        queued_partial = asyncio.create_task(decode("b", False))  # queued: no final waits yet
        await asyncio.sleep(0)
        waiting_final = asyncio.create_task(decode("c", True))
        await asyncio.sleep(0)
        dropped_partial = asyncio.create_task(decode("d", False))  # a final waits: dropped at once
        await asyncio.gather(busy, queued_partial, waiting_final, dropped_partial)
        scheduler.shutdown()
        return order, scheduler.stats

    order, stats = run(scenario())
    assert order[0] == "d:partial:dropped"
    assert order.index("c:final:ok") < order.index("b:partial:ok"), order
    assert stats.partials_dropped == 1 and stats.decodes == 3


def test_a_final_without_a_slot_in_time_fails_with_err1009(backend, audio):
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0.05)
        busy = asyncio.create_task(scheduler.decode(backend, np.tile(audio, 8), OPTIONS, language=None,
                                                    task="transcribe", is_final=True, stream_id="a"))
        await asyncio.sleep(0.01)
        with pytest.raises(ApplianceError) as err:
            await scheduler.decode(backend, audio, OPTIONS, language=None, task="transcribe", is_final=True,
                                   stream_id="b")
        await busy
        assert scheduler.pending == 0
        scheduler.shutdown()
        return err.value, scheduler.stats

    error, stats = run(scenario())
    assert error.code == "ERR1009" and "decode_queue_timeout_sec" in error.message
    assert stats.finals_timed_out == 1


def test_batch_window_feeds_one_backend_call(backend, audio):
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, batch_window_ms=50, max_batch_size=3, queue_timeout_sec=0)
        results = await asyncio.gather(*(
            scheduler.decode(backend, audio, OPTIONS, language=None, task="transcribe", is_final=True,
                             stream_id=f"s{i}") for i in range(3)))
        scheduler.shutdown()
        return results, scheduler.stats

    results, stats = run(scenario())
    assert stats.batches == 1 and stats.decodes == 3
    assert all(r.extra.get("batch_size") == 3 for r in results)
    assert all("center" in r.segments[0].text.lower() for r in results)


def test_a_failing_decode_is_err1016_and_the_scheduler_keeps_serving(backend, audio):
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        with pytest.raises(ApplianceError) as failure:
            # Audio the real backend cannot compute features for.
            await scheduler.decode(backend, np.array(["not audio"]), OPTIONS, language=None, task="transcribe",
                                   is_final=True, stream_id="broken")
        transcript = await scheduler.decode(backend, audio, OPTIONS, language=None, task="transcribe",
                                            is_final=True, stream_id="healthy")
        scheduler.shutdown()
        return failure.value, transcript, scheduler.stats

    error, transcript, stats = run(scenario())
    assert error.code == "ERR1016" and error.grpc_status == "INTERNAL"
    assert "center" in transcript.segments[0].text.lower() and stats.failures == 1


class RecordingObserver(DecodeObserver):
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.done = 0

    def decode_done(self, **_) -> None:
        self.done += 1

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        self.failed.append(outcome)


def test_a_decode_with_client_chosen_options_past_its_budget_is_cut_and_not_the_servers_failure(backend, audio):
    async def scenario():
        observer = RecordingObserver()
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0, max_decode_sec=0.001, observer=observer)
        outcomes: dict[str, object] = {}

        def on_done(label, transcript, error):
            outcomes[label] = error or transcript

        tuned = scheduler.open_stream("tuned", backend, language=None, task="transcribe", on_done=on_done,
                                      client_tuned=True)
        plain = scheduler.open_stream("plain", backend, language=None, task="transcribe", on_done=on_done)
        tuned.submit(audio, is_final=True, payload="tuned", options=OPTIONS)
        plain.submit(audio, is_final=True, payload="plain", options=OPTIONS)
        while len(outcomes) < 2:
            await asyncio.sleep(0.05)
        scheduler.shutdown()
        return outcomes, observer

    outcomes, observer = run(scenario())
    cut = outcomes["tuned"]
    assert isinstance(cut, ApplianceError) and cut.code == "ERR1009" and cut.grpc_status == "DEADLINE_EXCEEDED"
    assert "max_decode_sec" in cut.message
    assert not isinstance(outcomes["plain"], ApplianceError), "the server's own options are never cut"
    assert observer.failed == ["client"] and observer.done == 1


def test_demand_counts_running_and_waiting_decodes_against_the_slots(backend, audio):
    """The partial cadence reads this: idle slots read 0, decodes queued behind a busy slot read > 1."""
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        idle = scheduler.demand()
        decodes = [asyncio.create_task(scheduler.decode(backend, np.tile(audio, 4), OPTIONS, language=None,
                                                        task="transcribe", is_final=True, stream_id=f"s{i}"))
                   for i in range(3)]
        await asyncio.sleep(0.3)
        queued = scheduler.demand()
        await asyncio.gather(*decodes)
        scheduler.shutdown()
        return idle, queued

    idle, queued = run(scenario())
    # three decodes on one slot: the level is 3 (one running, two waiting), then at least 2, for 0.3 s of
    # a 2 s average
    assert idle == 0.0 and queued > 2 * (1 - np.exp(-0.3 / 2.0))
