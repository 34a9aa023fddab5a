"""What the stream stages hand each other: frames from the frontend, decode requests from the segmenter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameBatch:
    """32 ms frames at 16 kHz with their speech probability and RMS level, in timeline order."""

    frames: np.ndarray  # (n, FRAME_SAMPLES) float32
    probabilities: np.ndarray  # (n,)
    rms: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class SpeechBoundary:
    """The VAD opened ("started") or closed ("ended") an utterance, at `at_sec` in the timeline."""

    kind: str
    utterance_index: int
    at_sec: float


@dataclass(frozen=True, eq=False)
class DecodeDue:
    """Audio of one utterance (or its part so far) that should be decoded now."""

    utterance_index: int
    audio: np.ndarray  # 16 kHz mono float32
    start_sec: float  # stream timeline
    end_sec: float
    after_overlap: bool  # starts with buffer_overlap_sec the previous final already covered
    continues_speech: bool  # cut from the previous utterance mid-speech (buffer cap): prompt with its text
    in_noise: bool = False  # the stream's speech stands little above its noise floor: context helps

    is_final = False


@dataclass(frozen=True, eq=False)
class PartialDue(DecodeDue):
    """The partial cadence came round: a provisional hypothesis of the open utterance. `speculative`:
    issued as silence began, on exactly the audio the final would decode (see Segmenter)."""

    speculative: bool = False


@dataclass(frozen=True, eq=False)
class FinalDue(DecodeDue):
    """The utterance ended (endpoint, buffer-cap cut or end of input): its one final. `same_as_partial`:
    the last partial was speculative and decoded this very audio, so its hypothesis may stand."""

    is_final = True
    same_as_partial: bool = False
    # Where the utterance's own audio starts: `start_sec`, or after a buffer-cap cut the cut itself
    # (the overlap before it is the previous final's). A stream resumed before this final went out
    # restarts here.
    own_start_sec: float = 0.0
