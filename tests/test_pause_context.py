"""A pause inside a sentence costs no context: the utterance after a short pause is decoded with the
previous final as its prompt, one after a long silence is not, and a prompt that misfires (recited,
or in another language) is dropped and the final decoded again without it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from appliance.streaming.commit import repeats_prompt
from appliance.streaming.events import FinalDue
from appliance.streaming.prompt_context import PAUSE_PROMPT_CHARS, Context, PromptContext, open_ended, tail_words
from tests import speech
from tests.stages import to_pcm16
from tests.test_stage_stream import run_stream
from tests.test_stage_transcriber import PromptRecorder, backend, transcribe  # noqa: F401 (fixture)


@dataclass
class Decode:
    context: Context
    prompt: str | None


def due(start_sec: float, *, continues_speech: bool = False, in_noise: bool = False) -> FinalDue:
    return FinalDue(1, np.zeros(16_000, dtype=np.float32), start_sec, start_sec + 1.0, False, continues_speech,
                    in_noise)


def test_the_context_follows_the_gap_to_the_previous_final():
    context = PromptContext.for_silence(0.5)
    assert context.kind(due(0.6)) is Context.NONE  # no final yet
    context.final_sent("las arenas son blancas", end_sec=10.0, language="es")
    assert context.kind(due(10.5)) is Context.PAUSE and context.kind(due(10.8)) is Context.PAUSE
    assert context.kind(due(11.0)) is Context.NONE  # a silence longer than a pause inside a sentence
    assert context.kind(due(13.0, in_noise=True)) is Context.NOISE
    assert context.kind(due(30.0, continues_speech=True)) is Context.CUT
    assert context.prompt(Context.PAUSE) == "las arenas son blancas" and context.prompt(Context.NONE) is None


def test_without_the_session_asking_a_pause_gives_no_context():
    context = PromptContext.for_silence(0.5, pause=False)  # attribute pause_context off (the default)
    context.final_sent("las arenas son blancas", end_sec=10.0, language="es")
    assert context.kind(due(10.5)) is Context.NONE
    assert context.kind(due(13.0, in_noise=True)) is Context.NOISE  # noise and cut contexts stay
    assert context.kind(due(30.0, continues_speech=True)) is Context.CUT


def test_the_pause_prompt_is_short_and_starts_at_a_word():
    long_text = " ".join(f"word{i}" for i in range(100))
    tail = tail_words(long_text, PAUSE_PROMPT_CHARS)
    assert len(tail) <= PAUSE_PROMPT_CHARS and long_text.endswith(tail) and tail.split()[0] in long_text.split()
    assert tail_words("short", PAUSE_PROMPT_CHARS) == "short"


def test_a_pause_prompt_misfires_when_recited_or_in_another_language():
    context = PromptContext.for_silence(0.5)
    context.final_sent("Las arenas son blancas, de grano medio.", end_sec=1.0, language="es")
    paused = Decode(Context.PAUSE, context.prompt(Context.PAUSE))
    assert context.misfired(paused, "ja", "ミムイカリーザ")
    assert context.misfired(paused, "es", "son blancas, de grano medio.")
    assert context.misfired(paused, "es", "De grano.")  # a short text that is the prompt's
    assert not context.misfired(paused, "es", "y tiene muy poca consistencia")
    assert not context.misfired(Decode(Context.NOISE, paused.prompt), "ja", "son blancas, de grano medio.")
    assert repeats_prompt("one two three four five", "Two, three four five six!")
    assert repeats_prompt("one two three four five", "three four five.")
    assert not repeats_prompt("one two three four five", "three four and five")


def spoken_with_pause(tmp_path, pause_sec: float):
    """One espeak-ng sentence said in two halves with `pause_sec` of silence between them."""
    halves = []
    rate_hz = 22_050
    for i, text in enumerate(("My brother plays the piano", "every evening after dinner.")):
        audio, rate_hz = speech.speak(text, tmp_path / f"half{i}.wav")
        voiced = np.flatnonzero(np.abs(audio) > 0.01)
        halves.append(audio[voiced[0]:voiced[-1] + 1])  # espeak's own padding off: the pause is ours
    silence = lambda sec: np.zeros(int(sec * rate_hz), dtype=np.float32)  # noqa: E731
    joined = np.concatenate([silence(0.5), halves[0], silence(pause_sec), halves[1], silence(1.0)])
    path = tmp_path / f"paused_{pause_sec}.wav"
    sf.write(str(path), joined, rate_hz, subtype="PCM_16")
    return to_pcm16(joined), rate_hz


@pytest.mark.parametrize("pause_sec, prompted", [(0.7, True), (2.5, False)])
def test_after_a_short_pause_the_previous_final_is_the_prompt_after_a_long_one_it_is_not(
        backend, tmp_path, pause_sec, prompted):  # noqa: F811
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    recorder = PromptRecorder(backend)
    pcm16, rate_hz = spoken_with_pause(tmp_path, pause_sec)
    # no audio read while a decode runs: one decode per utterance (its speculation, reused)
    results, _, _ = run_stream(recorder, pcm16, rate_hz, stream_limits={"max_pending_per_stream": 1},
                               attributes={"pause_context": "true"})
    first, second = results  # the pause ended the first half's utterance either way
    assert "piano" in first.text.lower() and "dinner" in second.text.lower()
    assert recorder.prompts == [None, open_ended(first.text) if prompted else None]


def test_a_final_that_recites_its_pause_prompt_is_decoded_again_without_it(backend, prompt_audio):  # noqa: F811
    seconds = prompt_audio.size / 16_000
    # "Front center" twice, 0.6 s apart: the second, prompted with the first, comes back as the
    # prompt itself (a short text that is all prompt), so it is decoded again without the prompt
    again = FinalDue(1, prompt_audio, seconds + 0.6, 2 * seconds + 0.6, False, False)
    recorder = PromptRecorder(backend)
    first, second = transcribe(recorder, [FinalDue(0, prompt_audio, 0.0, seconds, False, False), again],
                               one_at_a_time=True, attributes={"pause_context": "true"})
    assert recorder.prompts == [None, open_ended(first.text), None]  # the prompt ends open
    assert second.text == first.text  # the same audio, decoded without a prompt both times
