"""The interface every Whisper backend implements, and the transcript it returns."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

import numpy as np

from appliance.decode_options import DecodeOptions


@dataclass(frozen=True)
class WordTiming:
    """One word as the backend aligned it: times in seconds from the start of the decoded audio."""

    text: str  # as decoded, usually with its leading space and punctuation
    start_sec: float
    end_sec: float
    probability: float


@dataclass(frozen=True)
class Segment:
    text: str
    start_sec: float
    end_sec: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: tuple[WordTiming, ...] = ()  # only when the decode asked for word_timestamps


class TranscriptExtra(TypedDict, total=False):
    """What a backend reports about how it decoded, beyond the text (figures and logs only)."""

    encode_frames: int  # mel frames the encoder saw (3000 = Whisper's full 30 s window)
    tokens: list[int]  # the generated text tokens, end-of-text excluded (the window check reads them)
    batch_size: int  # utterances decoded in the same backend call
    window_fallback: str  # why a short encode window was redone on a larger one


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    language_probability: float
    audio_sec: float
    decode_sec: float = 0.0
    extra: TranscriptExtra = field(default_factory=lambda: TranscriptExtra())


def segments_confidence(segments: Iterable[Segment]) -> float:
    """The decoder's confidence in these segments' text, 0-1: exp of their mean token log-probability,
    each segment weighted by its length in characters. 0 when none holds text."""
    spoken = [(len(s.text.strip()), s.avg_logprob) for s in segments if s.text.strip()]
    total = sum(length for length, _ in spoken)
    if not total:
        return 0.0
    return min(1.0, math.exp(sum(length * logprob for length, logprob in spoken) / total))


# Whisper's text context is 448 tokens; a prompt may take half of it less one (openai-whisper and
# faster-whisper both cut it there), and a prompt and hotwords together past that make
# faster-whisper raise "prompt length exceeds max_length" in the middle of a stream.
WHISPER_MAX_PROMPT_TOKENS = 448 // 2 - 1


class Backend(Protocol):
    """A loaded model. `transcribe` and `transcribe_batch` are blocking and thread-safe up to
    `max_concurrency` callers; the scheduler never batches more than `max_batch_size` utterances."""

    model_id: str
    device: str
    max_concurrency: int
    max_batch_size: int  # 1: the backend gains nothing from batching
    english_only: bool
    languages: tuple[str, ...]  # model.languages: detection keeps to these; () = any (language_choice)
    max_prompt_tokens: int  # initial_prompt + hotwords must fit: half of Whisper's 448-token text context

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt (as the decoder will see it, with its leading space)."""
        ...

    def window_frames(self, samples: int, provisional: bool = False) -> int:
        """The encoder window (mel frames) a decode of `samples` audio samples gets. A batch is decoded
        on one window, so the scheduler batches only decodes whose windows agree: a result never
        depends on what else was decoded with it."""
        ...

    def wants_second_look(self, transcript: Transcript) -> bool:
        """Whether a final with this reading would have been decoded again (a backend that decodes
        finals twice when unsure, faster_whisper's bucketed window): a speculative partial's
        reading, decoded once, may stand as its final only where this is False."""
        ...

    def transcribe(self, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                   task: str, provisional: bool = False, second_look: bool = True) -> Transcript:
        """Decode 16 kHz mono float32 audio; never conditions on text from earlier calls.

        `provisional` marks a partial: the backend may trade some accuracy for speed.
        `second_look`: a final may be decoded again when unsure (wants_second_look); the scheduler
        passes False while the box has no room for it."""
        ...

    def transcribe_batch(self, audios: list[np.ndarray], options: DecodeOptions, *, language: str | None,
                         task: str, provisional: bool = False, second_look: bool = True) -> list[Transcript]:
        """Decode several utterances with the same options; one transcript per input, in order."""
        ...
