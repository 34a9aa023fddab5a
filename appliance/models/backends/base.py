"""The interface every Whisper backend implements, and the transcript it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from appliance.decode_options import DecodeOptions


@dataclass(frozen=True)
class Segment:
    text: str
    start_sec: float
    end_sec: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    language_probability: float
    audio_sec: float
    decode_sec: float = 0.0
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    """A loaded model. `transcribe` is blocking and thread-safe up to `max_concurrency` callers."""

    model_id: str
    device: str
    max_concurrency: int
    english_only: bool

    def transcribe(self, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                   task: str, provisional: bool = False) -> Transcript:
        """Decode 16 kHz mono float32 audio; never conditions on text from earlier calls.

        `provisional` marks a partial: the backend may trade some accuracy for speed."""
        ...
