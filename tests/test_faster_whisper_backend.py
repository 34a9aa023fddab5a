"""The faster-whisper backend on the bundled model: both encode windows, real audio."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import soundfile as sf

from appliance.config import default_config_paths, load_config
from appliance.models.backends.faster_whisper import (
    FULL_WINDOW_FRAMES,
    FasterWhisperBackend,
    encode_frames_for,
    retry_frames,
)
from appliance.models.store import resolve_model
from clients.corpus import corpus, normalize
from tests import speech
from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("encode_window, frames", [("full", FULL_WINDOW_FRAMES), ("bucketed", 1000)])
def test_both_encode_windows_transcribe_a_prompt(prompt_audio, encode_window, frames):
    model = resolve_model("tiny.en")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(model.path), english_only=True,
                                   encode_window=encode_window, second_look_below=0)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    transcript = backend.transcribe(prompt_audio, options, language=None, task="transcribe")
    assert normalize(" ".join(s.text for s in transcript.segments)) == "front center"
    assert transcript.extra["encode_frames"] == frames
    assert transcript.language == "en" and transcript.decode_sec > 0


def test_buckets_hold_the_utterance_plus_a_margin():
    assert encode_frames_for(1.4) == 1000
    assert encode_frames_for(9.5) == 1500
    assert encode_frames_for(14.5) == 2000
    assert encode_frames_for(25.0) == FULL_WINDOW_FRAMES


def test_a_suspect_is_retried_on_the_next_bucket_then_the_full_window():
    assert [retry_frames(f) for f in (1000, 1500, 2000)] == [1500, 2000, FULL_WINDOW_FRAMES]


def test_batched_call_matches_single_decodes(prompt_audio):
    model = resolve_model("tiny.en")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(model.path), english_only=True)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    other = speech.alsa_prompt_16k("Side_Left.wav")
    batch = backend.transcribe_batch([prompt_audio, other], options, language=None, task="transcribe")
    singles = [backend.transcribe(a, options, language=None, task="transcribe") for a in (prompt_audio, other)]
    assert [normalize(" ".join(s.text for s in t.segments)) for t in batch] == ["front center", "side left"]
    for batched, single in zip(batch, singles, strict=True):
        assert batched.segments[0].text.strip() == single.segments[0].text.strip()
        assert abs(batched.segments[0].avg_logprob - single.segments[0].avg_logprob) < 0.05
        assert batched.extra["batch_size"] == 2


def test_utterances_longer_than_one_window_decode_within_the_token_limit(prompt_audio):
    # With max_buffer_sec disabled an utterance can pass 30 s; the token budget must stay inside
    # Whisper's 448-token context per window (faster-whisper raises otherwise).
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


@pytest.fixture(scope="module")
def looping_window(monkeypatch_module):
    # Whisper tiny.en loops on "Side left" when its encoder sees only 3 s ("Side left. Side left.
    # Side left. Side"); the 30 s window gets it right. Buckets from 3 s make the real model fail
    # the way short windows do on some commands, so the check and the redo run for real.
    monkeypatch_module.setattr("appliance.models.backends.faster_whisper.BUCKET_SEC", (3, 30))
    if not (speech.ALSA_DIR / "Side_Left.wav").exists():
        pytest.skip("Debian's alsa-utils prompts are not installed")
    return speech.alsa_prompt_16k("Side_Left.wav")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _bucketed_backend():
    """The shipped window, the second look off: these tests see the check alone."""
    return FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                english_only=True, encode_window="bucketed", second_look_below=0)


def test_a_looped_short_window_result_is_redone_on_the_full_window(looping_window):
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    transcript = _bucketed_backend().transcribe(looping_window, options, language=None, task="transcribe")
    assert normalize(" ".join(s.text for s in transcript.segments)) == "side left"
    assert transcript.extra["window_fallback"] == "repeated span"
    assert transcript.extra["encode_frames"] == FULL_WINDOW_FRAMES


def test_the_batched_path_redoes_only_its_suspects(looping_window, prompt_audio):
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    batch = _bucketed_backend().transcribe_batch([prompt_audio, looping_window], options, language=None,
                                                 task="transcribe")
    assert [normalize(" ".join(s.text for s in t.segments)) for t in batch] == ["front center", "side left"]
    assert "window_fallback" not in batch[0].extra and batch[0].extra["encode_frames"] == 300
    assert batch[1].extra["window_fallback"] == "repeated span"
    assert batch[1].extra["encode_frames"] == FULL_WINDOW_FRAMES


def test_numpy_blas_runs_on_one_thread_beside_the_model():
    # OpenBLAS workers spin-wait on the cores CTranslate2 decodes on (limit_numpy_blas_threads).
    from threadpoolctl import threadpool_info

    FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path), english_only=True)
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy is linked against a BLAS that threadpoolctl can see"
    assert all(pool["num_threads"] == 1 for pool in blas)


def _shipped_clips() -> list[tuple[str, np.ndarray]]:
    """The recordings the project ships (hwtests/speech), 16 kHz mono float32."""
    clips = []
    for recording in corpus(REPO_ROOT / "hwtests" / "speech"):
        audio, rate_hz = sf.read(str(recording.path), dtype="float32")
        assert rate_hz == 16_000 and audio.ndim == 1
        clips.append((recording.path.name, audio))
    assert clips, "hwtests/speech ships its recordings"
    return clips


def _check_words_cover(transcript, audio_sec: float) -> None:
    """Every word of every segment is timed, in order, inside the decoded audio."""
    for segment in transcript.segments:
        assert "".join(w.text for w in segment.words).split() == segment.text.split()
        words = segment.words
        assert all(0.0 <= w.start_sec <= w.end_sec <= audio_sec + 0.05 for w in words)
        assert all(a.start_sec <= b.start_sec for a, b in itertools.pairwise(words))
        assert all(0.0 <= w.probability <= 1.0 for w in words)


def test_word_timings_are_aligned_on_the_plain_decode_and_never_change_its_text():
    # faster-whisper's word mode decoded a short final's padding again ("go forward 10 meters. This
    # is the first one."); the alignment reads the plain decode's own tokens instead.
    backend = _bucketed_backend()
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    timed = dataclasses.replace(options, word_timestamps=True)
    clips = _shipped_clips()
    for name, audio in clips:
        plain = backend.transcribe(audio, options, language=None, task="transcribe")
        aligned = backend.transcribe(audio, timed, language=None, task="transcribe")
        assert [s.text for s in aligned.segments] == [s.text for s in plain.segments], name
        assert aligned.extra["encode_frames"] == plain.extra["encode_frames"]  # the same window
        assert not any(s.words for s in plain.segments) and all(s.words for s in aligned.segments), name
        _check_words_cover(aligned, audio.size / 16_000)
    # batched: the same text as the batch without words, each utterance's words from its own row
    audios = [audio for _, audio in clips]
    plain_batch = backend.transcribe_batch(audios, options, language=None, task="transcribe")
    timed_batch = backend.transcribe_batch(audios, timed, language=None, task="transcribe")
    for audio, plain, aligned in zip(audios, plain_batch, timed_batch, strict=True):
        assert [s.text for s in aligned.segments] == [s.text for s in plain.segments]
        assert aligned.extra["batch_size"] == len(audios) and all(s.words for s in aligned.segments)
        _check_words_cover(aligned, audio.size / 16_000)
    jfk = dict(zip([n for n, _ in clips], timed_batch, strict=True))["sent_en_jfk_ask_not.wav"]
    ask = [w for w in jfk.segments[0].words if normalize(w.text) == "ask"]
    assert len(ask) == 2 and 1.5 < ask[0].start_sec < 4.0 and 7.0 < ask[1].start_sec < 9.0  # heard at ~2.3 and ~8.1 s


def test_hotwords_change_a_batched_decode_as_they_change_a_single_one(tmp_path):
    # tiny.en hears espeak-ng's "Siobhan" as "Shimon"; the hotword fixes it, batched or not
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    import soxr

    def spoken(text: str, name: str) -> np.ndarray:
        audio, rate_hz = speech.speak(text, tmp_path / name)
        return soxr.resample(audio, rate_hz, 16_000).astype(np.float32)

    name = spoken("Send the report to Siobhan before noon.", "name.wav")
    other = spoken("The children are playing in the garden.", "other.wav")
    backend = _bucketed_backend()
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    for hotwords, heard in ((None, False), ("Siobhan", True)):
        tuned = dataclasses.replace(options, hotwords=hotwords)
        single = backend.transcribe(name, tuned, language=None, task="transcribe")
        batched = backend.transcribe_batch([name, other], tuned, language=None, task="transcribe")
        assert batched[0].extra["batch_size"] == 2
        texts = [normalize(" ".join(s.text for s in t.segments)) for t in (single, batched[0])]
        assert texts[0] == texts[1], hotwords
        assert ("siobhan" in texts[1]) is heard, texts
        assert "report" in texts[1] and "garden" in normalize(batched[1].segments[0].text)


def test_model_languages_keep_detection_to_the_listed_languages():
    # English speech on the multilingual base model: detected as en over the full distribution; with
    # model.languages [de, fr] the most probable of those two, with [en, de] still en, with [de] forced.
    from appliance.models.store import ModelStoreError

    base = str(resolve_model("base").path)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    jfk = dict(_shipped_clips())["sent_en_jfk_ask_not.wav"]

    def backend(*languages: str) -> FasterWhisperBackend:
        return FasterWhisperBackend(model_id="cpu-base", model_path=base, encode_window="bucketed",
                                    languages=languages)

    free = backend().transcribe(jfk, options, language=None, task="transcribe")
    assert free.language == "en" and free.language_probability > 0.5
    listed = backend("de", "fr", "de")
    assert listed.languages == ("de", "fr")
    single = listed.transcribe(jfk, options, language=None, task="transcribe")
    [batched, _] = listed.transcribe_batch([jfk, jfk[:16_000 * 3]], options, language=None, task="transcribe")
    for transcript in (single, batched):
        assert transcript.language in ("de", "fr")
        assert 0.0 <= transcript.language_probability < free.language_probability  # its own score, as scored
    named = listed.transcribe(jfk, options, language="fr", task="transcribe")  # a session's language is kept
    assert named.language == "fr" and named.language_probability == 1.0
    assert backend("en", "de").transcribe(jfk, options, language=None, task="transcribe").language == "en"
    forced = backend("de").transcribe(jfk, options, language=None, task="transcribe")
    assert forced.language == "de" and forced.language_probability == 1.0
    # English-only models decode English: [en] is accepted (as no restriction), anything else refused
    tiny_en = str(resolve_model("tiny.en").path)
    assert FasterWhisperBackend(model_id="cpu-tiny.en", model_path=tiny_en, english_only=True,
                                languages=("en",)).languages == ()
    with pytest.raises(ModelStoreError, match=r"model.languages lists de, but cpu-tiny.en is English-only"):
        FasterWhisperBackend(model_id="cpu-tiny.en", model_path=tiny_en, english_only=True, languages=("en", "de"))
    with pytest.raises(ModelStoreError, match=r"model.languages: 'xx' not Whisper"):
        backend("de", "xx")
