"""The audio of one utterance in progress (as 32 ms VAD frames with their speech probabilities).

While idle, the last few frames are kept as pre-roll so the utterance's first syllable is not lost.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from appliance.vad import FRAME_SAMPLES


class UtteranceBuffer:
    def __init__(self, preroll_frames: int):
        self._preroll: deque[tuple[np.ndarray, float]] = deque(maxlen=max(0, preroll_frames))
        self._frames: list[np.ndarray] = []
        self._probs: list[float] = []
        self.start_sample = 0  # timeline position of the first buffered sample
        self.last_speech_end_sample = 0  # timeline position just after the last speech frame
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def samples(self) -> int:
        return len(self._frames) * FRAME_SAMPLES

    @property
    def preroll_samples(self) -> int:
        return len(self._preroll) * FRAME_SAMPLES

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.samples

    def idle_frame(self, frame: np.ndarray, probability: float) -> None:
        self._preroll.append((frame, probability))

    def open(self, start_sample_of_frame: int, preroll_frames: int | None = None) -> None:
        """Open an utterance, starting with the last `preroll_frames` pre-roll frames (None: all kept)."""
        self._open = True
        kept = list(self._preroll)
        if preroll_frames is not None:
            kept = kept[len(kept) - min(max(0, preroll_frames), len(kept)):]
        self._frames = [f for f, _ in kept]
        self._probs = [p for _, p in kept]
        self._preroll.clear()
        self.start_sample = start_sample_of_frame - self.samples

    def drop_head(self, frames: int) -> None:
        """Drop the first `frames` frames (pre-roll found not to be needed); the start moves on."""
        frames = min(max(0, frames), len(self._frames))
        del self._frames[:frames], self._probs[:frames]
        self.start_sample += frames * FRAME_SAMPLES

    def append(self, frame: np.ndarray, probability: float) -> None:
        self._frames.append(frame)
        self._probs.append(probability)

    def audio(self, end_sample: int | None = None) -> np.ndarray:
        if not self._frames:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(self._frames)
        if end_sample is not None:
            audio = audio[: max(0, end_sample - self.start_sample)]
        return audio

    def close(self) -> None:
        self._open = False
        self._frames = []
        self._probs = []

    def split_at_quietest(self, search_frames: int, overlap_frames: int) -> tuple[np.ndarray, int, list[float]]:
        """Cut the utterance after its least speech-like frame among the last `search_frames`.

        Cutting in the gap between words rather than at an arbitrary sample keeps both halves
        decodable. Returns (audio up to the cut, timeline sample of the cut, speech probabilities of
        the frames after the cut); the buffer keeps `overlap_frames` before the cut plus everything
        after it as the next utterance.
        """
        n = len(self._frames)
        lowest = max(1, n - search_frames)
        cut = lowest + int(np.argmin(self._probs[lowest:])) + 1 if n > 1 else n
        head = np.concatenate(self._frames[:cut])
        cut_sample = self.start_sample + cut * FRAME_SAMPLES
        keep_from = max(0, cut - overlap_frames)
        after_cut_probs = self._probs[cut:]
        self._frames = self._frames[keep_from:]
        self._probs = self._probs[keep_from:]
        self.start_sample += keep_from * FRAME_SAMPLES
        return head, cut_sample, after_cut_probs
