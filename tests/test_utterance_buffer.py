"""UtteranceBuffer: pre-roll, timeline positions and split_at_quietest."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.streaming.utterance import UtteranceBuffer
from appliance.vad import FRAME_SAMPLES


def frame(index: int) -> np.ndarray:
    """A frame whose samples encode their own timeline position, so slices can be checked exactly."""
    start = index * FRAME_SAMPLES
    return np.arange(start, start + FRAME_SAMPLES, dtype=np.float32)


def timeline(first_frame: int, last_frame: int) -> np.ndarray:
    """Samples of frames first_frame..last_frame-1 as they were fed."""
    return np.arange(first_frame * FRAME_SAMPLES, last_frame * FRAME_SAMPLES, dtype=np.float32)


def filled(probs: list[float], first_frame: int = 0) -> UtteranceBuffer:
    """An open buffer holding one frame per probability, starting at timeline frame `first_frame`."""
    buf = UtteranceBuffer(preroll_frames=0)
    buf.open(first_frame * FRAME_SAMPLES)
    for i, p in enumerate(probs):
        buf.append(frame(first_frame + i), p)
    return buf


def test_new_buffer_is_empty_and_closed():
    buf = UtteranceBuffer(preroll_frames=3)
    assert not buf.is_open
    assert buf.samples == 0
    assert buf.audio().size == 0
    assert buf.audio().dtype == np.float32


def test_preroll_keeps_only_the_last_frames_and_moves_the_start_back():
    buf = UtteranceBuffer(preroll_frames=3)
    for i in range(10):
        buf.idle_frame(frame(i), 0.1)
    buf.open(10 * FRAME_SAMPLES)  # speech starts with frame 10
    buf.append(frame(10), 0.9)
    assert buf.is_open
    assert buf.start_sample == 7 * FRAME_SAMPLES
    assert buf.samples == 4 * FRAME_SAMPLES
    assert buf.end_sample == 11 * FRAME_SAMPLES
    np.testing.assert_array_equal(buf.audio(), timeline(7, 11))


def test_short_preroll_at_stream_start():
    buf = UtteranceBuffer(preroll_frames=5)
    buf.idle_frame(frame(0), 0.2)
    buf.open(1 * FRAME_SAMPLES)
    buf.append(frame(1), 0.9)
    assert buf.start_sample == 0
    np.testing.assert_array_equal(buf.audio(), timeline(0, 2))


def test_zero_preroll():
    buf = UtteranceBuffer(preroll_frames=0)
    buf.idle_frame(frame(0), 0.2)
    buf.open(1 * FRAME_SAMPLES)
    buf.append(frame(1), 0.9)
    assert buf.start_sample == FRAME_SAMPLES
    np.testing.assert_array_equal(buf.audio(), timeline(1, 2))


def test_preroll_is_consumed_by_open_and_close_empties_the_buffer():
    buf = UtteranceBuffer(preroll_frames=2)
    buf.idle_frame(frame(0), 0.1)
    buf.idle_frame(frame(1), 0.1)
    buf.open(2 * FRAME_SAMPLES)
    buf.append(frame(2), 0.9)
    buf.close()
    assert not buf.is_open
    assert buf.samples == 0
    assert buf.audio().size == 0
    # The next utterance gets only the idle frames seen after the first one opened.
    buf.idle_frame(frame(3), 0.1)
    buf.open(4 * FRAME_SAMPLES)
    buf.append(frame(4), 0.9)
    assert buf.start_sample == 3 * FRAME_SAMPLES
    np.testing.assert_array_equal(buf.audio(), timeline(3, 5))


def test_audio_up_to_a_timeline_sample():
    buf = filled([0.9] * 4, first_frame=5)
    end = 5 * FRAME_SAMPLES + 700
    np.testing.assert_array_equal(buf.audio(end), np.arange(5 * FRAME_SAMPLES, end, dtype=np.float32))
    assert buf.audio(0).size == 0  # before the buffer: nothing, not a negative slice
    np.testing.assert_array_equal(buf.audio(10**9), timeline(5, 9))


def test_split_cuts_after_the_quietest_frame_in_the_search_window():
    probs = [0.9, 0.8, 0.1, 0.9, 0.9, 0.3, 0.9, 0.9]
    buf = filled(probs, first_frame=100)
    head, cut_sample, after = buf.split_at_quietest(search_frames=4, overlap_frames=0)
    # Window = the last 4 frames (indices 4..7); the lowest is index 5 (0.3), not index 2 (0.1).
    assert cut_sample == (100 + 6) * FRAME_SAMPLES
    np.testing.assert_array_equal(head, timeline(100, 106))
    assert after == [0.9, 0.9]
    assert buf.start_sample == cut_sample
    np.testing.assert_array_equal(buf.audio(), timeline(106, 108))


def test_split_search_window_larger_than_buffer_never_cuts_before_the_first_frame():
    probs = [0.0, 0.5, 0.2, 0.6]  # frame 0 is the quietest, but a cut needs audio in the head
    buf = filled(probs)
    head, cut_sample, after = buf.split_at_quietest(search_frames=50, overlap_frames=0)
    assert cut_sample == 3 * FRAME_SAMPLES  # after frame 2 (0.2)
    np.testing.assert_array_equal(head, timeline(0, 3))
    assert after == [0.6]


def test_split_with_quietest_frame_last_leaves_nothing_after_the_cut():
    buf = filled([0.9, 0.9, 0.9, 0.05])
    head, cut_sample, after = buf.split_at_quietest(search_frames=3, overlap_frames=0)
    assert cut_sample == 4 * FRAME_SAMPLES
    np.testing.assert_array_equal(head, timeline(0, 4))
    assert after == []
    assert buf.samples == 0
    assert buf.start_sample == cut_sample


def test_split_keeps_overlap_frames_before_the_cut():
    probs = [0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9]
    buf = filled(probs, first_frame=10)
    head, cut_sample, after = buf.split_at_quietest(search_frames=5, overlap_frames=2)
    assert cut_sample == 15 * FRAME_SAMPLES
    np.testing.assert_array_equal(head, timeline(10, 15))
    assert after == [0.9, 0.9]
    # The buffer restarts 2 frames before the cut and its timeline says so.
    assert buf.start_sample == 13 * FRAME_SAMPLES
    assert buf.end_sample == 17 * FRAME_SAMPLES
    np.testing.assert_array_equal(buf.audio(), timeline(13, 17))
    # Its probabilities moved with the frames: a second split finds the kept quiet frame.
    head2, cut2, _ = buf.split_at_quietest(search_frames=10, overlap_frames=0)
    assert cut2 == 15 * FRAME_SAMPLES
    np.testing.assert_array_equal(head2, timeline(13, 15))


def test_split_overlap_larger_than_the_head_keeps_everything():
    buf = filled([0.9, 0.1, 0.9], first_frame=4)
    head, cut_sample, _ = buf.split_at_quietest(search_frames=3, overlap_frames=10)
    assert cut_sample == 6 * FRAME_SAMPLES
    np.testing.assert_array_equal(head, timeline(4, 6))
    assert buf.start_sample == 4 * FRAME_SAMPLES
    np.testing.assert_array_equal(buf.audio(), timeline(4, 7))


def test_split_single_frame_buffer():
    buf = filled([0.5], first_frame=2)
    head, cut_sample, after = buf.split_at_quietest(search_frames=4, overlap_frames=0)
    assert cut_sample == 3 * FRAME_SAMPLES
    np.testing.assert_array_equal(head, timeline(2, 3))
    assert after == []
    assert buf.samples == 0


@pytest.mark.parametrize("seed", range(20))
def test_split_loses_and_duplicates_no_samples(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    first = int(rng.integers(0, 1000))
    probs = rng.random(n).tolist()
    search = int(rng.integers(1, n + 5))
    buf = filled(probs, first_frame=first)
    original = buf.audio()
    end_before = buf.end_sample
    head, cut_sample, after = buf.split_at_quietest(search_frames=search, overlap_frames=0)
    # with overlap 0, head + remaining == original, and the timeline is continuous
    np.testing.assert_array_equal(np.concatenate((head, buf.audio())), original)
    assert cut_sample == first * FRAME_SAMPLES + head.size == buf.start_sample
    assert buf.end_sample == end_before
    assert len(after) * FRAME_SAMPLES == buf.samples
    # the cut is right after the lowest frame of the window (never frame 0's left edge)
    window_start = max(1, n - search)
    quietest = window_start + int(np.argmin(probs[window_start:]))
    assert head.size == (quietest + 1) * FRAME_SAMPLES
    assert after == probs[quietest + 1:]


@pytest.mark.parametrize("seed", range(20))
def test_split_with_overlap_repeats_exactly_the_overlap(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(2, 40))
    probs = rng.random(n).tolist()
    overlap = int(rng.integers(0, 6))
    buf = filled(probs, first_frame=7)
    original = buf.audio()
    head, cut_sample, after = buf.split_at_quietest(search_frames=int(rng.integers(1, n + 1)),
                                                    overlap_frames=overlap)
    kept = min(overlap, head.size // FRAME_SAMPLES)
    rest = buf.audio()
    assert buf.start_sample == cut_sample - kept * FRAME_SAMPLES
    # the remaining buffer starts with the last `kept` frames of the head ...
    np.testing.assert_array_equal(rest[:kept * FRAME_SAMPLES], head[head.size - kept * FRAME_SAMPLES:])
    # ... and without them, head + remaining == original
    np.testing.assert_array_equal(np.concatenate((head, rest[kept * FRAME_SAMPLES:])), original)
    assert len(after) * FRAME_SAMPLES == rest.size - kept * FRAME_SAMPLES
