"""Stage 2, frontend: PCM16 at the client's rate in, 32 ms frames with speech probability and RMS out.

`to_model_rate` (cheap, streaming soxr) runs on the event loop; `frames` runs the stream's Silero
VAD state and is blocking, so the stream shell calls it in the VAD executor. One stream calls
them one at a time, so the resampler and VAD state need no lock.
"""

from __future__ import annotations

import numpy as np

from appliance.audio import StreamResampler, pcm16_to_float32
from appliance.streaming.events import FrameBatch
from appliance.vad import FRAME_SAMPLES, VadStream

_NO_FRAMES = FrameBatch(np.zeros((0, FRAME_SAMPLES), dtype=np.float32), np.zeros(0), np.zeros(0))


class Frontend:
    def __init__(self, vad: VadStream):
        self._vad = vad
        self._resampler = StreamResampler()

    def to_model_rate(self, pcm16: bytes, sample_rate_hz: int) -> np.ndarray:
        """16 kHz float32 samples (a resampler keeps a few samples back between calls)."""
        return self._resampler(pcm16_to_float32(pcm16), sample_rate_hz)

    def flush(self) -> np.ndarray:
        """What the resampler held back, at the end of the input."""
        return self._resampler.flush()

    def frames(self, samples: np.ndarray) -> FrameBatch:
        """Complete frames of `samples` (plus what earlier calls left over) with VAD and RMS."""
        if samples.size == 0:
            return _NO_FRAMES
        frames, probabilities = self._vad.process(samples)
        if not len(frames):
            return _NO_FRAMES
        rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        return FrameBatch(frames, probabilities, rms)
