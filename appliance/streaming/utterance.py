"""The audio of one utterance in progress and of the pre-roll before it."""

from __future__ import annotations

from collections import deque

import numpy as np


class UtteranceBuffer:
    """Frames of the open utterance (or, while idle, the last few frames as pre-roll)."""

    def __init__(self, preroll_frames: int):
        self._preroll: deque[np.ndarray] = deque(maxlen=max(0, preroll_frames))
        self._frames: list[np.ndarray] = []
        self.start_sample = 0  # timeline position of the first buffered sample
        self.samples = 0
        self.last_speech_end_sample = 0  # timeline position just after the last speech frame
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    def idle_frame(self, frame: np.ndarray) -> None:
        self._preroll.append(frame)

    def open(self, start_sample_of_frame: int) -> None:
        """Open an utterance, starting with the pre-roll frames."""
        self._open = True
        self._frames = list(self._preroll)
        self._preroll.clear()
        self.samples = sum(f.size for f in self._frames)
        self.start_sample = start_sample_of_frame - self.samples

    def append(self, frame: np.ndarray) -> None:
        self._frames.append(frame)
        self.samples += frame.size

    def audio(self, end_sample: int | None = None) -> np.ndarray:
        audio = np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.float32)
        if end_sample is not None:
            audio = audio[: max(0, end_sample - self.start_sample)]
        return audio

    def tail(self, samples: int) -> np.ndarray:
        return self.audio()[-samples:] if samples > 0 else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        self._open = False
        self._frames = []
        self.samples = 0

    def reopen_with(self, overlap: np.ndarray, start_sample: int) -> None:
        """Start the next utterance with `overlap` (the tail of the one just cut)."""
        self._open = True
        self._frames = [overlap] if overlap.size else []
        self.samples = overlap.size
        self.start_sample = start_sample
