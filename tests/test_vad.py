"""Silero VAD on the real ONNX graph shipped in faster-whisper: probabilities, streaming state, slot pool."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.vad import FRAME_SAMPLES, SileroOnnx, VadPool, VadStream, bundled_silero_path


@pytest.fixture(scope="module")
def model() -> SileroOnnx:
    return SileroOnnx()


@pytest.fixture(scope="module")
def speech(prompt_audio) -> np.ndarray:
    """A real spoken prompt ("front center"), mono float32 at 16 kHz (conftest.py's prompt_audio)."""
    return prompt_audio


def noise(seconds: float, level: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16_000 * seconds)) * level).astype(np.float32)


def in_uneven_chunks(stream: VadStream, audio: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames, probs = [], []
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 1300))  # from 1 sample up to ~2.5 frames per call
        f, p = stream.process(audio[i:i + n])
        frames.append(f)
        probs.append(p)
        i += n
    return np.concatenate(frames), np.concatenate(probs)


def test_the_bundled_graph_exists():
    assert bundled_silero_path().is_file()


def test_speech_is_detected(model, speech):
    _, probs = VadStream(model).process(speech)
    assert probs.shape == (speech.size // FRAME_SAMPLES,)
    assert probs.dtype == np.float32
    assert probs.max() > 0.8
    assert ((probs >= 0) & (probs <= 1)).all()


def test_digital_silence_is_not_speech(model):
    _, probs = VadStream(model).process(np.zeros(16_000 * 2, dtype=np.float32))
    assert probs.size == 62
    assert probs.max() < 0.3


def test_low_white_noise_is_not_speech(model):
    _, probs = VadStream(model).process(noise(2.0, level=0.01, seed=1234))
    assert probs.max() < 0.3


def test_process_returns_whole_frames_and_keeps_the_rest(model):
    stream = VadStream(model)
    frames, probs = stream.process(np.zeros(FRAME_SAMPLES - 1, dtype=np.float32))
    assert frames.shape == (0, FRAME_SAMPLES) and probs.size == 0
    assert stream.pending_samples.size == FRAME_SAMPLES - 1
    ramp = np.arange(FRAME_SAMPLES * 2, dtype=np.float32) / 10_000
    frames, probs = stream.process(ramp)
    assert frames.shape == (2, FRAME_SAMPLES) and probs.size == 2
    # the first frame is the 511 pending zeros + the first ramp sample; the rest waits
    np.testing.assert_array_equal(frames.reshape(-1), np.concatenate((np.zeros(511, np.float32), ramp[:513])))
    np.testing.assert_array_equal(stream.pending_samples, ramp[513:])


def test_one_call_and_uneven_chunks_give_the_same_probabilities(model, speech):
    audio = np.concatenate((speech, noise(0.5, 0.005, seed=7)))
    frames_whole, probs_whole = VadStream(model).process(audio)
    frames_chunked, probs_chunked = in_uneven_chunks(VadStream(model), audio, seed=42)
    np.testing.assert_array_equal(frames_chunked, frames_whole)
    np.testing.assert_allclose(probs_chunked, probs_whole, atol=1e-4)


def test_state_matters_so_the_chunked_equality_is_not_trivial(model, speech):
    """A fresh stream on the second half disagrees with the carried-over one: state is really carried."""
    half = (speech.size // 2 // FRAME_SAMPLES) * FRAME_SAMPLES
    _, probs_whole = VadStream(model).process(speech)
    _, probs_fresh = VadStream(model).process(speech[half:])
    carried = probs_whole[half // FRAME_SAMPLES:]
    assert np.abs(probs_fresh - carried).max() > 1e-3


def test_reset_starts_over(model, speech):
    stream = VadStream(model)
    _, first = stream.process(speech)
    stream.process(speech[:1000])  # leaves state and pending samples behind
    stream.reset()
    assert stream.pending_samples.size == 0
    _, again = stream.process(speech)
    np.testing.assert_allclose(again, first, atol=1e-6)


def test_interleaved_streams_do_not_affect_each_other(model, speech):
    other = noise(speech.size / 16_000, 0.05, seed=5)
    _, speech_alone = VadStream(model).process(speech)
    _, noise_alone = VadStream(model).process(other)
    a, b = VadStream(model), VadStream(model)
    probs_a, probs_b = [], []
    rng = np.random.default_rng(9)
    i = 0
    while i < speech.size:
        n = int(rng.integers(100, 1500))
        probs_a.append(a.process(speech[i:i + n])[1])
        probs_b.append(b.process(other[i:i + n])[1])
        i += n
    np.testing.assert_allclose(np.concatenate(probs_a), speech_alone, atol=1e-4)
    np.testing.assert_allclose(np.concatenate(probs_b), noise_alone, atol=1e-4)


# --- VadPool --------------------------------------------------------------------------------

def test_pool_grows_by_the_growth_factor_up_to_max_slots(model):
    pool = VadPool(model, initial_slots=2, max_slots=10, growth_factor=2.0)
    assert (pool.capacity, pool.leased) == (2, 0)
    streams = [pool.acquire() for _ in range(2)]
    assert (pool.capacity, pool.leased) == (2, 2)
    capacities = []
    for _ in range(8):
        streams.append(pool.acquire())
        capacities.append(pool.capacity)
    # 2 -> 4 on the 3rd lease, 4 -> 8 on the 5th, 8 -> 10 (capped) on the 9th
    assert capacities == [4, 4, 8, 8, 8, 8, 10, 10]
    assert pool.leased == 10
    assert all(isinstance(s, VadStream) for s in streams)
    assert len({id(s) for s in streams}) == 10

    with pytest.raises(ApplianceError) as info:
        pool.acquire()
    assert info.value.code == "ERR1008"
    assert info.value.retry_after_sec == 1.0
    assert "10" in info.value.message
    assert (pool.capacity, pool.leased) == (10, 10)

    pool.release(streams.pop())
    assert pool.leased == 9
    streams.append(pool.acquire())  # the freed slot is usable again
    assert (pool.capacity, pool.leased) == (10, 10)
    with pytest.raises(ApplianceError):
        pool.acquire()


def test_pool_growth_factor_one_is_a_fixed_pool(model):
    pool = VadPool(model, initial_slots=2, max_slots=8, growth_factor=1.0)
    pool.acquire()
    pool.acquire()
    with pytest.raises(ApplianceError) as info:
        pool.acquire()
    assert info.value.code == "ERR1008" and pool.capacity == 2


def test_pool_initial_slots_are_capped_by_max_slots(model):
    pool = VadPool(model, initial_slots=16, max_slots=2, growth_factor=2.0)
    assert pool.capacity == 2
    first = pool.acquire()
    pool.acquire()
    with pytest.raises(ApplianceError):
        pool.acquire()
    pool.release(first)
    assert pool.leased == 1


def test_pool_warm_up_leases_nothing(model):
    pool = VadPool(model, initial_slots=1, max_slots=1, growth_factor=2.0)
    pool.warm_up()
    assert pool.leased == 0
    pool.acquire()
    assert pool.leased == 1
