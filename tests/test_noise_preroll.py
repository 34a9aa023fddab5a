"""The pre-roll follows the noise: an utterance that opens where the stream's own SNR estimate says
noise takes NOISY_EXTRA_PREROLL_SEC more audio before its first speech frame; clean speech keeps
`preroll_sec`. An utterance that opens before there is an estimate (a stream's first) keeps the longer
pre-roll until its first decode and drops the extra then unless the estimate reads noise. On real
speech (the shipped JFK recording, four utterances, after a second of silence or noise) through the
real frontend (resampler, Silero) and segmenter."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from appliance.streaming.events import FinalDue
from appliance.streaming.frontend import Frontend
from appliance.streaming.preroll import (
    NOISY_EXTRA_PREROLL_SEC,
    NOISY_PREROLL_BELOW_DB,
    most_preroll_frames,
    opening_preroll_frames,
    preroll_frames,
    preroll_to_drop,
)
from appliance.streaming.segmenter import Segmenter, SegmenterConfig
from appliance.vad import FRAME_SEC, SileroOnnx, VadStream
from clients.noise import noise_like
from tests import speech
from tests.stages import Backlog, chunks, limits, settings, to_pcm16


def test_the_longer_preroll_needs_an_estimate_under_the_threshold():
    default, noisy = round(0.3 / FRAME_SEC), round((0.3 + NOISY_EXTRA_PREROLL_SEC) / FRAME_SEC)
    assert preroll_frames(0.3, None) == default  # no estimate yet: the default
    assert preroll_frames(0.3, NOISY_PREROLL_BELOW_DB + 2) == default
    assert preroll_frames(0.3, NOISY_PREROLL_BELOW_DB - 2) == noisy == most_preroll_frames(0.3)
    assert preroll_frames(0.0, 3.0) == 0 == most_preroll_frames(0.0)  # a pre-roll turned off stays off


def test_an_utterance_opened_without_an_estimate_drops_the_extra_at_its_first_decode_unless_noisy():
    default, noisy = round(0.3 / FRAME_SEC), round((0.3 + NOISY_EXTRA_PREROLL_SEC) / FRAME_SEC)
    assert opening_preroll_frames(0.3, None) == noisy
    assert opening_preroll_frames(0.3, NOISY_PREROLL_BELOW_DB + 2) == default
    assert preroll_to_drop(0.3, None, noisy) == noisy - default  # still no estimate: the default
    assert preroll_to_drop(0.3, NOISY_PREROLL_BELOW_DB + 2, noisy) == noisy - default
    assert preroll_to_drop(0.3, NOISY_PREROLL_BELOW_DB - 2, noisy) == 0
    assert preroll_to_drop(0.3, None, default - 2) == 0  # a stream's very start had less to keep
    assert preroll_to_drop(0.3, None, default + 2) == 2
    assert preroll_to_drop(0.0, None, 0) == 0


def prerolls(pcm16: bytes, rate_hz: int) -> list[float]:
    """Each final's pre-roll in seconds: from its audio's start to the frame the VAD opened it on."""
    silero = SileroOnnx()
    segmenter = Segmenter(SegmenterConfig.for_session(settings(), limits()), Backlog())
    frontend = Frontend(VadStream(silero))
    onsets: dict[int, float] = {}
    finals: list[FinalDue] = []
    for chunk in [*chunks(pcm16, rate_hz), None]:
        batch = frontend.frames(frontend.to_model_rate(chunk, rate_hz) if chunk else frontend.flush())
        for frame, probability, level in zip(batch.frames, batch.probabilities, batch.rms, strict=True):
            due = segmenter.push(frame, float(probability), float(level))
            onsets.update((b.utterance_index, b.at_sec) for b in segmenter.take_boundaries() if b.kind == "started")
            if isinstance(due, FinalDue):
                finals.append(due)
    last = segmenter.finish()
    finals += [last] if last else []
    return [round(onsets[f.utterance_index] - f.start_sec, 3) for f in finals if not f.continues_speech]


@pytest.fixture(scope="module")
def jfk() -> tuple[np.ndarray, int]:
    """JFK after a second of silence: room for the longer pre-roll before the first onset too."""
    audio, rate_hz = sf.read(str(speech.JFK), dtype="float64")
    return np.concatenate([np.zeros(rate_hz), audio]), rate_hz


def with_white_noise(audio: np.ndarray, rate_hz: int, snr_db: float) -> bytes:
    noise = noise_like("white", audio.size, rate_hz, np.random.default_rng(7), [])
    gain = np.sqrt(np.mean(audio ** 2)) / np.sqrt(np.mean(noise ** 2)) / 10 ** (snr_db / 20)
    mixed = audio + gain * noise
    return to_pcm16(mixed / max(1.0, np.abs(mixed).max() / 0.99))


def test_clean_speech_keeps_the_default_preroll(jfk):
    frames = round(0.3 / FRAME_SEC) * FRAME_SEC
    got = prerolls(to_pcm16(jfk[0]), jfk[1])
    assert len(got) >= 3
    assert all(p <= frames + 1e-3 for p in got), got


@pytest.mark.parametrize("snr_db", [10.0, 5.0])
def test_in_white_noise_utterances_take_the_longer_preroll_the_first_one_too(jfk, snr_db):
    default = round(0.3 / FRAME_SEC) * FRAME_SEC
    noisy = round((0.3 + NOISY_EXTRA_PREROLL_SEC) / FRAME_SEC) * FRAME_SEC
    got = prerolls(with_white_noise(*jfk, snr_db), jfk[1])
    assert len(got) >= 3, got
    # The first onset came before the estimate; its first decode found noise and kept the extra.
    assert abs(got[0] - noisy) < 1e-3, got
    # After a short gap the idle frames since the last utterance are all the pre-roll there is.
    assert all(p <= noisy + 1e-3 for p in got) and any(p > default + 1e-3 for p in got[1:]), got
