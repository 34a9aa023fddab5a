"""Finals never wait behind partials, and finals due together are batched: the scheduler with the real model.

Each decode runs on the real tiny.en backend; a thin wrapper only records the order backend calls
start in (and their batch sizes), which is what these tests are about. Orders, not times: nothing
here depends on how fast the box is.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from appliance.config import default_config_paths, load_config
from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.scheduler import DecodeScheduler

OPTIONS = load_config(*default_config_paths()).decode_profiles["realtime"]


class RecordingBackend:
    """The real backend; every call's start is recorded as (labels of the audio it decodes)."""

    def __init__(self, backend: FasterWhisperBackend, labels: dict[int, str]):
        self._backend = backend
        self._labels = labels  # id(audio array) -> label
        self.calls: list[tuple[str, ...]] = []
        self._lock = threading.Lock()
        self.model_id = backend.model_id
        self.max_batch_size = backend.max_batch_size
        self.max_concurrency = 2

    def _record(self, audios) -> None:
        with self._lock:
            self.calls.append(tuple(self._labels.get(id(a), "?") for a in audios))

    def window_frames(self, samples, provisional=False):
        return self._backend.window_frames(samples, provisional)

    def wants_second_look(self, transcript):
        return self._backend.wants_second_look(transcript)

    def transcribe(self, audio, options, **kwargs):
        self._record([audio])
        return self._backend.transcribe(audio, options, **kwargs)

    def transcribe_batch(self, audios, options, **kwargs):
        self._record(audios)
        return self._backend.transcribe_batch(audios, options, **kwargs)


@pytest.fixture(scope="module")
def real_backend():
    return FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                english_only=True, pool_size=2, compute_type="int8")


def clip(prompt_audio: np.ndarray, repeat: int = 1) -> np.ndarray:
    return np.tile(prompt_audio, repeat).copy()  # its own array: labelled by identity


def run_streams(backend, scheduler: DecodeScheduler, steps) -> dict[str, object]:
    """Play `steps` ([(stream, label, audio, kind) or a float pause in seconds]) and wait for every outcome."""
    async def scenario():
        outcomes: dict[str, object] = {}
        queues = {}

        def on_done(label, transcript, error):
            outcomes[label] = error or transcript

        submitted = 0
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            stream, label, audio, kind = step
            if stream not in queues:
                queues[stream] = scheduler.open_stream(stream, backend, language=None, task="transcribe",
                                                       on_done=on_done)
            queues[stream].submit(audio, is_final=kind == "final", payload=label, options=OPTIONS,
                                  speculative=kind == "speculative")
            submitted += 1
        while len(outcomes) < submitted:
            await asyncio.sleep(0.02)
        scheduler.shutdown()
        return outcomes

    return asyncio.run(scenario())


def test_a_final_due_while_partials_run_starts_before_the_next_partial(real_backend, prompt_audio):
    """Stream s paused (its speculative partial came): finals are due soon, so partials of the
    other streams keep to one of the two slots and the final that comes next starts at once, on
    the slot kept for it, ahead of the partial queued before it."""
    audios = {name: clip(prompt_audio, 3) for name in ("spec", "p1", "p2", "p3", "final")}
    backend = RecordingBackend(real_backend, {id(a): name for name, a in audios.items()})
    scheduler = DecodeScheduler(max_in_flight=2, max_batch_size=1, queue_timeout_sec=0, final_reserved_slots=1,
                                finals_soon_sec=600)
    outcomes = run_streams(backend, scheduler, [
        ("s", "spec", audios["spec"], "speculative"),  # speech paused on s
        ("a", "p1", audios["p1"], "partial"),
        ("b", "p2", audios["p2"], "partial"),
        ("c", "p3", audios["p3"], "partial"),
        0.05,
        ("d", "final", audios["final"], "final"),
    ])
    starts = [call[0] for call in backend.calls]
    assert starts[:2] == ["spec", "p1"], starts  # one slot for partials, the other for the pause's decode
    assert starts.index("final") < starts.index("p2"), starts  # the final did not queue behind p2
    assert all(not isinstance(o, Exception) for o in outcomes.values()), outcomes
    assert "center" in outcomes["final"].segments[0].text.lower()


def test_with_no_final_in_sight_partials_use_every_slot(real_backend, prompt_audio):
    """No stream paused and no final came: the reserved slot serves partials too (first words fast)."""
    audios = {name: clip(prompt_audio, 3) for name in ("p1", "p2")}
    backend = RecordingBackend(real_backend, {id(a): name for name, a in audios.items()})
    scheduler = DecodeScheduler(max_in_flight=2, max_batch_size=1, queue_timeout_sec=0, final_reserved_slots=1,
                                finals_soon_sec=600)
    in_flight: list[int] = []

    async def scenario():
        outcomes = []
        queues = [scheduler.open_stream(f"s{i}", backend, language=None, task="transcribe",
                                        on_done=lambda *args: outcomes.append(args)) for i in range(2)]
        for queue, label in zip(queues, audios, strict=True):
            queue.submit(audios[label], is_final=False, payload=label, options=OPTIONS)
        await asyncio.sleep(0.01)
        in_flight.append(scheduler.in_flight)
        while len(outcomes) < 2:
            await asyncio.sleep(0.02)
        scheduler.shutdown()

    asyncio.run(scenario())
    assert in_flight == [2]


def test_finals_due_together_are_batched_evenly_over_the_slots(real_backend, prompt_audio):
    """Six streams end at once: two batched calls of three (one per slot), each text right."""
    audios = {f"f{i}": clip(prompt_audio) for i in range(6)}
    backend = RecordingBackend(real_backend, {id(a): name for name, a in audios.items()})
    scheduler = DecodeScheduler(max_in_flight=2, max_batch_size=8, queue_timeout_sec=0)
    outcomes = run_streams(backend, scheduler, [(f"s{i}", f"f{i}", audios[f"f{i}"], "final") for i in range(6)])
    assert sorted(len(call) for call in backend.calls) == [3, 3], backend.calls
    assert scheduler.stats.batches == 2 and scheduler.stats.decodes == 6
    for label in audios:
        transcript = outcomes[label]
        assert transcript.extra.get("batch_size") == 3
        assert "center" in transcript.segments[0].text.lower(), (label, transcript.segments)


def test_finals_on_different_encoder_windows_are_never_batched_together(prompt_audio):
    """Short finals (a 10 s window) and long ones (15 s) end at once on one slot: two calls, each on
    one window, so a short final reads the same whether or not a long one ended beside it."""
    real_backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                        english_only=True, compute_type="int8", encode_window="bucketed",
                                        second_look_below=0)  # the window each decode starts on
    audios = {f"short{i}": clip(prompt_audio) for i in range(3)}
    audios |= {f"long{i}": np.concatenate([prompt_audio, np.zeros(9 * 16_000, np.float32)]) for i in range(2)}
    window = {name: real_backend.window_frames(a.size) for name, a in audios.items()}
    assert window["short0"] < window["long0"]
    backend = RecordingBackend(real_backend, {id(a): name for name, a in audios.items()})
    scheduler = DecodeScheduler(max_in_flight=1, max_batch_size=8, queue_timeout_sec=0)
    outcomes = run_streams(backend, scheduler, [(f"s{name}", name, audio, "final") for name, audio in audios.items()])
    assert sorted(sorted(call) for call in backend.calls) == [["long0", "long1"], ["short0", "short1", "short2"]]
    [alone] = real_backend.transcribe_batch([clip(prompt_audio)], OPTIONS, language=None, task="transcribe")
    for name in audios:
        assert outcomes[name].extra["encode_frames"] == window[name]
        if name.startswith("short"):
            assert [s.text for s in outcomes[name].segments] == [s.text for s in alone.segments]


def test_a_speculative_partial_is_kept_under_pressure_and_covers_its_streams_queued_partial(
        real_backend, prompt_audio):
    """A speculative partial (the final's own audio, as speech paused) drops its stream's queued
    partial, whose audio it covers; while a final waits, a new ordinary partial is dropped at once
    but a speculative one is decoded, after the finals and before any partial."""
    audios = {name: clip(prompt_audio, 2) for name in ("busy", "old", "spec", "waiting", "dropped", "spec2")}
    backend = RecordingBackend(real_backend, {id(a): name for name, a in audios.items()})
    scheduler = DecodeScheduler(max_in_flight=1, max_batch_size=1, queue_timeout_sec=0)
    outcomes = run_streams(backend, scheduler, [
        ("a", "busy", audios["busy"], "final"),  # takes the only slot
        0.05,
        ("g", "old", audios["old"], "partial"),  # queued: no final waits yet
        ("g", "spec", audios["spec"], "speculative"),  # speech paused on g: covers "old"
        ("b", "waiting", audios["waiting"], "final"),  # a final waits: pressure
        ("c", "dropped", audios["dropped"], "partial"),
        ("f", "spec2", audios["spec2"], "speculative"),
    ])
    assert outcomes["old"] is None and outcomes["dropped"] is None
    assert "center" in outcomes["spec"].segments[0].text.lower()
    assert "center" in outcomes["spec2"].segments[0].text.lower()
    starts = [call[0] for call in backend.calls]
    assert starts == ["busy", "waiting", "spec", "spec2"], starts
