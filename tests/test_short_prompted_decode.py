"""A prompted decode that comes back short is done again without its prompt, and the longer stands.

With the previous final as its prompt, Whisper can skip audio: in babble the piece of a long
paragraph after a buffer-cap cut came back as only its last two sentences. A prompted final with
under SHORT_RATE_RATIO of the words per second of the final before it is decoded again unprompted
(`PromptContext.came_back_short`); of the two, the one with more words is the final. On real speech
(the shipped JFK recording) through the real transcriber and tiny.en; the skipping is played by a
backend that cuts a prompted decode's text, as Whisper did."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from appliance.streaming.events import FinalDue
from appliance.streaming.prompt_context import (
    SHORT_MIN_AUDIO_SEC,
    SHORT_RATE_RATIO,
    Context,
    PromptContext,
    open_ended,
)
from tests import speech
from tests.helpers import normalise
from tests.test_pause_context import Decode
from tests.test_stage_transcriber import PromptRecorder, backend, transcribe  # noqa: F401 (fixture)


def test_short_means_under_the_share_of_the_previous_finals_words_per_second():
    context = PromptContext.for_silence(0.5, pause=False)
    cut = Decode(Context.CUT, "twenty words")
    assert not context.came_back_short("one", 10.0)  # no final before: no yardstick
    context.final_sent(" ".join(["word"] * 30), end_sec=10.0, language="en", audio_sec=10.0)  # 3 words/s
    enough = round(SHORT_RATE_RATIO * 3 * 8)  # in 8 s at half of 3 words/s: 12 words
    assert context.came_back_short(" ".join(["w"] * (enough - 1)), 8.0)
    assert not context.came_back_short(" ".join(["w"] * enough), 8.0)
    assert not context.came_back_short("w", SHORT_MIN_AUDIO_SEC - 0.1)  # too short to read a rate from
    assert context.misfired(cut, "en", "two words", audio_sec=8.0, utterance_index=4, result="first")
    assert context.first_try is not None and context.first_try.words == 2
    assert not context.misfired(Decode(Context.NONE, None), "en", "two words", audio_sec=8.0)  # not prompted
    assert not context.misfired(cut, "en", "two words")  # no audio length given: only the pause checks
    assert context.longer(4, "redo", "one") == "first"  # the redo came back shorter still
    assert context.first_try is None and context.longer(4, "redo", "one") == "redo"
    context.misfired(cut, "en", "two words", audio_sec=8.0, utterance_index=4, result="first")
    assert context.longer(4, "redo", "three words here") == "redo"
    context.final_sent("a short final", end_sec=20.0, language="en", audio_sec=1.0)
    assert not context.came_back_short("w", 8.0)  # a final too short to read a rate from: no yardstick


class CutsPromptedText(PromptRecorder):
    """The real backend, but the text of the n-th decode is cut to its last `keep[n]` words (None: as
    decoded): a prompted decode that skipped the start of its audio."""

    def __init__(self, backend, keep: list[int | None]):  # noqa: F811
        super().__init__(backend)
        self._keep = keep

    def transcribe(self, audio, options, **kwargs):
        transcript = super().transcribe(audio, options, **kwargs)
        keep = self._keep[len(self.prompts) - 1] if len(self.prompts) <= len(self._keep) else None
        if keep is None:
            return transcript
        words = " ".join(s.text.strip() for s in transcript.segments).split()
        return replace(transcript, segments=(replace(transcript.segments[-1], text=" " + " ".join(words[-keep:])),))


@pytest.fixture(scope="module")
def jfk_audio() -> np.ndarray:
    audio, rate_hz = sf.read(str(speech.JFK), dtype="float32")
    assert rate_hz == 16_000
    return audio


def two_pieces(audio: np.ndarray) -> list[FinalDue]:
    """The recording, then the recording again as if cut from it at the buffer cap (prompted)."""
    seconds = audio.size / 16_000
    return [FinalDue(0, audio, 0.0, seconds, False, False),
            FinalDue(1, audio, seconds, 2 * seconds, False, True)]


def test_a_prompted_final_that_comes_back_short_is_decoded_again_without_its_prompt(
        backend, jfk_audio):  # noqa: F811
    recorder = CutsPromptedText(backend, keep=[None, 4])
    first, second = transcribe(recorder, two_pieces(jfk_audio), one_at_a_time=True)
    assert recorder.prompts == [None, open_ended(first.text), None]  # a cut: the prompt ends open
    assert second.text == first.text and len(first.text.split()) >= 20


def test_the_prompted_try_stands_when_the_redo_is_shorter_still(backend, jfk_audio):  # noqa: F811
    recorder = CutsPromptedText(backend, keep=[None, 4, 2])
    first, second = transcribe(recorder, two_pieces(jfk_audio), one_at_a_time=True)
    assert recorder.prompts == [None, open_ended(first.text), None]  # a cut: the prompt ends open
    # (the prompted decode, its prompt open, may end the sentence without a stop)
    assert normalise(second.text).split() == normalise(first.text).split()[-4:]


def test_a_whole_prompted_decode_is_not_done_again(backend, jfk_audio):  # noqa: F811
    recorder = PromptRecorder(backend)
    first, second = transcribe(recorder, two_pieces(jfk_audio), one_at_a_time=True)
    assert recorder.prompts == [None, open_ended(first.text)]  # one decode each: the guard did not fire
    assert len(second.text.split()) >= 18
