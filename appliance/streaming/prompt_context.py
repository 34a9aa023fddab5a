"""Which earlier text a decode gets as its prompt, and when a prompted decode must be done again without.

Offline Whisper decodes each 30 s window with the text before it as context; a stream cut into
utterances loses that. The previous final goes back in as the prompt when the next utterance
continues it:

- after a buffer-cap cut (`continues_speech`): the speech never stopped;
- in noise (`in_noise`), when that final ended within NOISY_CONTEXT_GAP_SEC: there the context is
  worth more than the risk of carrying its errors;
- after a pause inside a sentence: the utterance starts within `vad_silence_sec` +
  PAUSE_EXTRA_GAP_SEC of the previous final's last speech, i.e. the speaker paused for little more
  than the endpoint's own silence. Readers pause mid-sentence for breath and phrasing, and each
  fragment decoded alone loses words at its edges. Across a longer silence, in clean speech, the
  context measured worse, so it is not given.

A prompt can go wrong: Whisper may repeat it instead of transcribing the audio, and a prompt in one
language pulls the decode of an utterance in another. The pause prompt is therefore short
(PAUSE_PROMPT_CHARS, cut at a word), and a final decoded with it that repeats it or comes back in
another language than the prompt's is decoded again without it (`misfired`).

Any prompt can also make Whisper skip audio: in babble, the piece of a long paragraph after a
buffer-cap cut came back, prompted, as only its last two sentences (17 words lost; without the
prompt it kept them). A prompted final with under SHORT_RATE_RATIO of the words per second of the
final its prompt came from (`came_back_short`) is decoded again without the prompt, and the longer
of the two stands (`longer`). The speaker's own rate is the yardstick, not a fixed floor: slow
readers and Harvard lists read 1.6-2 words/s where the short piece read 1.6 against 3.6 before it.

After a cut or a pause the prompt ends open: without the previous final's closing full stop
(`open_ended`, OPEN_ENDED_CONTEXTS). With it, Whisper reads the next piece as the start of a
sentence and can drop the fragment that opens it. On VCTK readings (bench/wer.py --readings, 713
words) the stream made 3-12 fewer errors in clean speech, pink and white noise, and within 3 of before
in babble.

The pause context is a session's choice (attribute `pause_context`, off by default). A prompt is part
of a decode's options and CTranslate2 batches only decodes whose prompts line up, so a prompted final
is decoded alone: in staggered speech at 24-32 streams on 2 CPU cores, prompting every pause doubled
p95 final latency (finals-only 0.69 -> 1.57 s, partials 0.70 -> 1.54 s; docs/capacity.md). It helps
long-form readers and non-English speech with the multilingual models (pooled WER 13.3 -> 11.9 %);
a session that dictates long passages asks for it, a kiosk taking short commands does not need it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar, cast

from appliance.streaming.commit import repeats_prompt
from appliance.streaming.events import DecodeDue

PROMPT_CHARS = 200  # previous text given as context after a buffer-cap cut, or in noise
NOISY_CONTEXT_GAP_SEC = 5.0  # in noise, the previous final is context if it ended this recently
# After a pause: the gap from the previous final's last speech to the next utterance's start (its
# pre-roll) may exceed the endpoint's silence by this much (0.5 s endpoint: silences up to ~1.1 s).
PAUSE_EXTRA_GAP_SEC = 0.3
PAUSE_PROMPT_CHARS = 120  # a short prompt: enough for the sentence's thread, too little to be recited
# A prompted final came back short when its words per second of audio are under this share of the
# previous final's. On the dev set's consecutive finals (3 s and longer, all seven conditions) the
# ratio reads 0.60 and up, and 0.46 where the prompted piece lost 17 words (docs/accuracy.md).
SHORT_RATE_RATIO = 0.5
SHORT_MIN_AUDIO_SEC = 3.0  # either final shorter than this: too few words to read a rate from
SENTENCE_ENDS = ".!?…。！？؟।"  # what `open_ended` takes off a prompt (OPEN_ENDED_CONTEXTS)


log = logging.getLogger(__name__)
Result = TypeVar("Result")


class Context(Enum):
    NONE = "none"
    CUT = "cut"
    NOISE = "noise"
    PAUSE = "pause"


# Where the speech went on (a buffer-cap cut) or paused briefly inside a sentence, the previous
# final's closing full stop is the cut's, not the speaker's. Given it, Whisper takes the next piece
# to open a sentence and can drop the fragment it starts with ("...is said to be the effect." lost
# "of superimposition of a number of bows"), so those prompts end open (`open_ended`). After a
# silence in noise the next utterance does open a sentence: that prompt keeps its stop (without
# it, Whisper drifted into lowercase text without stops, and read worse on the Harvard list).
OPEN_ENDED_CONTEXTS = frozenset({Context.CUT, Context.PAUSE})


@dataclass
class FirstTry:
    """A prompted final that came back short, kept in case its redo without the prompt is shorter still."""

    utterance_index: int
    words: int
    result: object  # the decode's transcript, as the transcriber had it


class Prompted(Protocol):
    """A decode, as it was prompted."""

    @property
    def context(self) -> Context: ...

    @property
    def prompt(self) -> str | None: ...


@dataclass
class PromptContext:
    """One stream's last final, as context for the next decodes."""

    pause_gap_sec: float  # vad_silence_sec + PAUSE_EXTRA_GAP_SEC
    last_text: str = ""
    last_end_sec: float = 0.0
    last_language: str = ""
    last_audio_sec: float = 0.0  # the last final's audio, for its words per second
    unprompted_utterance: int = -1  # its pause prompt misfired: decoded without a prompt from then on
    first_try: FirstTry | None = None  # the last prompted final that came back short

    @classmethod
    def for_silence(cls, vad_silence_sec: float, pause: bool = True) -> PromptContext:
        """`pause`: the session asked for the pause context (attribute pause_context; off by default)."""
        return cls(pause_gap_sec=vad_silence_sec + PAUSE_EXTRA_GAP_SEC if pause else -1.0)

    def choose(self, due: DecodeDue, no_context: bool = False) -> tuple[Context, str | None]:
        """The context a decode of `due` gets, and its prompt (None: none)."""
        if no_context or due.utterance_index == self.unprompted_utterance:
            return Context.NONE, None
        kind = self.kind(due)
        return kind, self.prompt(kind)

    def kind(self, due: DecodeDue) -> Context:
        if not self.last_text:
            return Context.NONE
        if due.continues_speech:
            return Context.CUT
        gap_sec = due.start_sec - self.last_end_sec
        if due.in_noise and gap_sec <= NOISY_CONTEXT_GAP_SEC:
            return Context.NOISE
        if 0 <= gap_sec <= self.pause_gap_sec + 1e-6:  # (timeline sums carry float error)
            return Context.PAUSE
        return Context.NONE

    def prompt(self, kind: Context) -> str | None:
        if kind is Context.NONE:
            return None
        if kind is Context.PAUSE:
            text = tail_words(self.last_text, PAUSE_PROMPT_CHARS)
        else:
            text = self.last_text[-PROMPT_CHARS:]
        return open_ended(text) if kind in OPEN_ENDED_CONTEXTS else text

    def misfired(self, decode: Prompted, language: str, text: str, audio_sec: float | None = None,
                 utterance_index: int = -1, result: object = None) -> bool:
        """A prompted decode that should be done again without its prompt (a final) or dropped (a
        partial): with any prompt, it came back short (`came_back_short`, given its `audio_sec`; it is
        kept as `first_try`); with the pause prompt, its language is not the prompt's, or its text
        recites the prompt."""
        kind, prompt = decode.context, decode.prompt
        if kind is Context.NONE or not prompt:
            return False
        if audio_sec is not None and self.came_back_short(text, audio_sec):
            log.debug("utterance %d: the %s-prompted decode came back short (%d words in %.1f s; %d in %.1f s "
                      "before)", utterance_index, kind.value, len(text.split()), audio_sec,
                      len(self.last_text.split()), self.last_audio_sec)
            self.first_try = FirstTry(utterance_index, len(text.split()), result)
            return True
        if kind is not Context.PAUSE:
            return False
        if self.last_language and language and language != self.last_language:
            return True
        return repeats_prompt(prompt, text)

    def came_back_short(self, text: str, audio_sec: float) -> bool:
        """Fewer words per second of `audio_sec` than SHORT_RATE_RATIO of the previous final's."""
        if audio_sec < SHORT_MIN_AUDIO_SEC or self.last_audio_sec < SHORT_MIN_AUDIO_SEC:
            return False
        words_per_sec_before = len(self.last_text.split()) / self.last_audio_sec
        return len(text.split()) < SHORT_RATE_RATIO * words_per_sec_before * audio_sec

    def longer(self, utterance_index: int, result: Result, text: str) -> Result:
        """For a final decoded again without its prompt: its `result`, or the prompted first try's if
        that one held more words."""
        first, self.first_try = self.first_try, None
        if first is not None and first.utterance_index == utterance_index and first.words > len(text.split()):
            return cast(Result, first.result)
        return result

    def final_sent(self, text: str, end_sec: float, language: str, audio_sec: float = 0.0) -> None:
        self.last_text, self.last_end_sec, self.last_language = text, end_sec, language
        self.last_audio_sec = audio_sec


def tail_words(text: str, max_chars: int) -> str:
    """The end of `text`, at most `max_chars`, starting at a word."""
    if len(text) <= max_chars:
        return text
    tail = text[-max_chars:]
    cut = tail.find(" ")
    return tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail


def open_ended(text: str) -> str:
    """`text` without its closing sentence punctuation."""
    return text.rstrip().rstrip(SENTENCE_ENDS).rstrip()
