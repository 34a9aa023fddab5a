"""SpeechToNoise: the speech-over-noise estimate the segmenter flags noisy utterances with."""

from __future__ import annotations

import pytest

from appliance.streaming.snr import MIN_FRAMES, TIME_CONSTANT_FRAMES, SpeechToNoise


def feed(estimate: SpeechToNoise, probability: float, level: float, frames: int) -> None:
    for _ in range(frames):
        estimate.update(probability, level)


def test_no_estimate_until_both_speech_and_noise_were_heard_long_enough():
    estimate = SpeechToNoise()
    feed(estimate, 0.9, 0.1, 100)
    assert estimate.db is None  # speech only: no noise floor yet
    feed(estimate, 0.0, 0.01, MIN_FRAMES - 1)
    assert estimate.db is None
    estimate.update(0.0, 0.01)
    assert estimate.db == pytest.approx(20.0)  # 0.1 over 0.01 in amplitude


def test_uncertain_frames_count_toward_neither():
    estimate = SpeechToNoise()
    feed(estimate, 0.9, 0.1, MIN_FRAMES)
    feed(estimate, 0.0, 0.01, MIN_FRAMES)
    feed(estimate, 0.3, 1.0, 500)  # loud but the VAD is unsure: not speech, not noise
    assert estimate.db == pytest.approx(20.0)


def test_a_noise_floor_that_rises_is_followed_within_seconds():
    estimate = SpeechToNoise()
    feed(estimate, 0.9, 0.1, MIN_FRAMES)
    feed(estimate, 0.0, 0.001, 1000)  # a quiet room: 40 dB
    assert estimate.db == pytest.approx(40.0)
    feed(estimate, 0.0, 0.05, 3 * TIME_CONSTANT_FRAMES)  # a fan starts
    assert estimate.db == pytest.approx(6.0, abs=0.5)


def test_digital_silence_is_a_very_high_ratio_not_an_error():
    estimate = SpeechToNoise()
    feed(estimate, 0.9, 0.1, MIN_FRAMES)
    feed(estimate, 0.0, 0.0, MIN_FRAMES)
    assert estimate.db is not None and estimate.db > 70
