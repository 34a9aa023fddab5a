"""Speculative finals in finals-only sessions, on real speech through the whole stage chain: at
`tail_sec` of silence the final's audio is decoded (never sent as a partial); the endpoint that
follows with no speech in between delivers that decode as the final, with the plain final's text and
words; speech inside the pause throws the speculation away and the final is decoded."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.scheduler.observer import DecodeObserver
from tests import speech
from tests.stages import MODEL_ID, to_pcm16
from tests.test_stage_stream import run_stream


class Decodes(DecodeObserver):
    """Counts the decodes the scheduler ran, by kind."""

    def __init__(self) -> None:
        self.finals = 0
        self.partials = 0

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None:
        if is_final:
            self.finals += 1
        else:
            self.partials += 1


@pytest.fixture(scope="module")
def backend():
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True)


def stream(backend, path, monkeypatch, *, speculate: bool, **session_options):
    audio, rate_hz = sf.read(str(path), dtype="float32")
    decodes = Decodes()
    # No audio is read while a decode runs, as at real time, where 0.25 s of silence gives a short
    # utterance's speculative decode the time to finish before the endpoint.
    limits = {"max_pending_per_stream": 1, "speculative_finals": "always" if speculate else "never"}
    results, ledger_bytes, _ = run_stream(backend, to_pcm16(audio), rate_hz, observer=decodes,
                                          stream_limits=limits, **session_options)
    assert ledger_bytes == 0
    return results, decodes


def test_a_finals_only_final_is_its_speculative_decode_with_the_plain_finals_text_and_words(
        backend, sentences, monkeypatch):
    timed = {"attributes": {"word_timestamps": "true"}}
    plain, plain_decodes = stream(backend, sentences.path, monkeypatch, speculate=False, **timed)
    results, decodes = stream(backend, sentences.path, monkeypatch, speculate=True, **timed)
    assert all(r.is_final for r in results)  # the speculation is never sent as a partial
    assert (plain_decodes.finals, plain_decodes.partials) == (3, 0)
    # three finals, and each is the decode made as its silence began: no final decode ran
    assert (decodes.finals, decodes.partials) == (0, 3)
    assert [(r.utterance_index, r.text) for r in results] == [(r.utterance_index, r.text) for r in plain]
    assert all(r.partials_dropped == 0 and r.decode_latency_sec == 0.0 for r in results)  # reused
    for final, reference in zip(results, plain, strict=True):  # words as a plain final has them
        assert [w.word for w in final.words] == [w.word for w in reference.words] == final.text.split()
        assert all(w.probability > 0 for w in final.words)  # aligned, not the evenly spread estimate
        for word, other in zip(final.words, reference.words, strict=True):
            assert word.start_sec == pytest.approx(other.start_sec, abs=0.02)


def test_speech_inside_the_pause_throws_the_speculation_away_and_the_final_is_decoded(
        backend, tmp_path, monkeypatch):
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    first, rate_hz = speech.speak("My brother plays the piano", tmp_path / "a.wav")
    second, _ = speech.speak("every evening after dinner.", tmp_path / "b.wav")
    # espeak pads each part with silence of its own: trim it so the pause is the one made here,
    # longer than tail_sec (0.25 s, the speculation) and shorter than the endpoint (0.5 s)
    voiced = [np.flatnonzero(np.abs(part) > 0.01) for part in (first, second)]
    first, second = first[:voiced[0][-1] + 1], second[voiced[1][0]:]
    pause = np.zeros(int(0.4 * rate_hz), dtype=np.float32)
    edge = np.zeros(int(0.5 * rate_hz), dtype=np.float32)
    path = tmp_path / "paused.wav"
    sf.write(str(path), np.concatenate([edge, first, pause, second, edge, edge]), rate_hz, subtype="PCM_16")
    plain, _ = stream(backend, path, monkeypatch, speculate=False)
    results, decodes = stream(backend, path, monkeypatch, speculate=True)
    assert [r.text for r in results] == [r.text for r in plain] and len(results) == 1
    assert "piano" in results[0].text.lower() and "dinner" in results[0].text.lower()
    # one speculation wasted at the pause inside the sentence, one taken at its end: no final decode
    assert decodes.partials == 2 and decodes.finals == 0
