"""The faster-whisper backend on the bundled model: both encode windows, real audio."""

from __future__ import annotations

import pytest

from appliance.config import default_config_paths, load_config
from appliance.models.backends.faster_whisper import FULL_WINDOW_FRAMES, FasterWhisperBackend, encode_frames_for
from appliance.models.store import resolve_model
from clients.corpus import normalize
from tests import speech


@pytest.fixture(scope="module")
def prompt_audio():
    if not (speech.ALSA_DIR / "Front_Center.wav").exists():
        pytest.skip("Debian's alsa-utils prompts are not installed")
    return speech.alsa_prompt_16k("Front_Center.wav")


@pytest.mark.parametrize("encode_window, frames", [("full", FULL_WINDOW_FRAMES), ("bucketed", 1500)])
def test_both_encode_windows_transcribe_a_prompt(prompt_audio, encode_window, frames):
    model = resolve_model("tiny.en")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(model.path), english_only=True,
                                   encode_window=encode_window)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    transcript = backend.transcribe(prompt_audio, options, language=None, task="transcribe")
    assert normalize(" ".join(s.text for s in transcript.segments)) == "front center"
    assert transcript.extra["encode_frames"] == frames
    assert transcript.language == "en" and transcript.decode_sec > 0


def test_buckets_hold_the_utterance_plus_a_margin():
    assert encode_frames_for(1.4) == 1500
    assert encode_frames_for(14.5) == 2000
    assert encode_frames_for(25.0) == FULL_WINDOW_FRAMES


def test_batched_call_matches_single_decodes(prompt_audio):
    model = resolve_model("tiny.en")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(model.path), english_only=True)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    other = speech.alsa_prompt_16k("Side_Left.wav")
    batch = backend.transcribe_batch([prompt_audio, other], options, language=None, task="transcribe")
    singles = [backend.transcribe(a, options, language=None, task="transcribe") for a in (prompt_audio, other)]
    assert [normalize(" ".join(s.text for s in t.segments)) for t in batch] == ["front center", "side left"]
    for batched, single in zip(batch, singles):
        assert batched.segments[0].text.strip() == single.segments[0].text.strip()
        assert abs(batched.segments[0].avg_logprob - single.segments[0].avg_logprob) < 0.05
        assert batched.extra["batch_size"] == 2


def test_utterances_longer_than_one_window_decode_within_the_token_limit(prompt_audio):
    # With max_buffer_sec disabled an utterance can pass 30 s; the token budget must stay inside
    # Whisper's 448-token context per window (faster-whisper raises otherwise).
    import numpy as np

    from appliance.models.backends.faster_whisper import MAX_TOKEN_BUDGET, token_budget

    assert token_budget(45.0) == MAX_TOKEN_BUDGET <= 448 // 2
    pause = np.zeros(16_000, dtype=np.float32)
    audio = np.concatenate([np.concatenate([prompt_audio, pause])] * 16)
    assert audio.size / 16_000 > 30
    model = resolve_model("tiny.en")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(model.path), english_only=True)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    transcript = backend.transcribe(audio, options, language=None, task="transcribe")
    assert normalize(" ".join(s.text for s in transcript.segments)).count("front center") >= 10
