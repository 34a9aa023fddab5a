"""A stream's speech-to-noise ratio, estimated from the frames the VAD has already scored.

The noise floor is the mean power of frames the VAD is confident hold no speech, the speech level
that of frames it is confident hold speech; each is a running mean that forgets over
`TIME_CONSTANT_FRAMES` (~5 s), so a kiosk whose fan starts or stops is followed. Until both have
`MIN_FRAMES` behind them there is no estimate.
"""

from __future__ import annotations

import math

NOISE_PROBABILITY = 0.1  # frames below this count toward the noise floor
SPEECH_PROBABILITY = 0.6  # frames at or above this count toward the speech level
TIME_CONSTANT_FRAMES = 156  # ~5 s of 32 ms frames
MIN_FRAMES = 16  # ~0.5 s of each before the estimate means anything
_POWER_FLOOR = 1e-10  # digital silence: -100 dBFS, not log(0)


class _RunningPower:
    def __init__(self) -> None:
        self.frames = 0
        self.power = 0.0

    def add(self, level: float) -> None:
        self.frames += 1
        weight = 1.0 / min(self.frames, TIME_CONSTANT_FRAMES)  # a plain mean until the window is full
        self.power += weight * (level * level - self.power)


class SpeechToNoise:
    def __init__(self) -> None:
        self._noise = _RunningPower()
        self._speech = _RunningPower()

    def update(self, probability: float, level: float) -> None:
        """One frame's speech probability and RMS level."""
        if probability < NOISE_PROBABILITY:
            self._noise.add(level)
        elif probability >= SPEECH_PROBABILITY:
            self._speech.add(level)

    @property
    def db(self) -> float | None:
        """Speech level over the noise floor in dB; None until both have been heard long enough."""
        if self._noise.frames < MIN_FRAMES or self._speech.frames < MIN_FRAMES:
            return None
        return 10 * math.log10(max(self._speech.power, _POWER_FLOOR) / max(self._noise.power, _POWER_FLOOR))
