"""A prompt from the previous final ends open after a cut or a pause (prompt_context.OPEN_ENDED_CONTEXTS):
given the closing full stop, Whisper takes the next piece to open a sentence and drops the fragment
that opens it. The rule on its own, then the loss it mends on real speech from the dev set (skipped
without ../shared)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from appliance.config import default_config_paths, load_config
from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.streaming.prompt_context import (
    PROMPT_CHARS,
    Context,
    PromptContext,
    open_ended,
)
from clients.audio import load_pcm16
from clients.corpus import normalize
from clients.dev_set import dev_set

OPTIONS = load_config(*default_config_paths()).decode_profiles["realtime"]


def test_a_prompt_ends_open_where_the_speech_went_on():
    context = PromptContext.for_silence(0.5)
    context.final_sent("The actual primary rainbow observed is said to be the effect.", end_sec=10.0, language="en")
    assert context.prompt(Context.CUT) == "The actual primary rainbow observed is said to be the effect"
    assert context.prompt(Context.PAUSE) == "The actual primary rainbow observed is said to be the effect"
    # after a silence in noise the next utterance opens a sentence: its prompt keeps the stop
    assert context.prompt(Context.NOISE) == "The actual primary rainbow observed is said to be the effect."
    assert context.last_text.endswith("effect.")  # the final as sent keeps its stop; only the prompt drops it
    assert [open_ended(t) for t in ("Really?! ", "Wait…", "終わり。", "x", "")] == ["Really", "Wait", "終わり", "x", ""]


def _sentences(speaker: str) -> list[np.ndarray]:
    out = []
    for recording in dev_set():
        if recording.path.name.startswith(f"sent_en_vctk_{speaker}_"):
            pcm16, rate_hz = load_pcm16(recording.path)
            assert rate_hz == 16_000
            out.append(np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768)
    return out


@pytest.mark.corpus
def test_a_piece_cut_mid_sentence_keeps_its_opening_words_after_an_open_ended_prompt():
    sentences = _sentences("p228")
    if len(sentences) < 9:
        pytest.skip("no dev set here (../shared/audio/more, VCTK speaker p228)")
    # bench/wer.py --readings: p228's sentences read one after another; the appliance cut the
    # reading at the buffer cap 3.7 s into "The actual primary rainbow observed is said to be the
    # effect | of super-imposition of a number of bows." The next piece runs on to "...type of bow."
    reading = np.concatenate(sentences)
    piece = reading[int(52.608 * 16_000):int(69.216 * 16_000)]
    previous = ("The difference in the rainbow depends considerably upon the size of the drops and the width of the "
                "coloured band increases as the size of the drops increases. The actual primary rainbow observed is "
                "said to be the effect.")
    backend = FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                   english_only=True, second_look_below=0)

    def heard(prompt: str) -> str:
        options = replace(OPTIONS, initial_prompt=prompt[-PROMPT_CHARS:])
        transcript = backend.transcribe(piece, options, language=None, task="transcribe")
        return normalize(" ".join(s.text for s in transcript.segments))

    closed, opened = heard(previous), heard(open_ended(previous))
    assert closed.startswith("if the red of the"), closed  # the fragment dropped: the loss mended
    assert opened.startswith("of super") and "number of bows if the red of the" in opened, opened
