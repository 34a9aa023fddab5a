"""Noise made by code, for the hallucination check: with no speech the appliance must say nothing.

Whisper is known to "hear" words in silence and noise ("Thank you.", "you"); the server's VAD and
quality filter are meant to stop that, so every clip here must give 0 words. Made with numpy from a
fixed seed, so a fresh box needs no file and two runs send the same samples.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE_HZ = 16_000
HUM_HZ = 50.0  # mains hum in Europe/Asia; 60 Hz boxes see the same kind of signal
LEVEL_DBFS = -30.0  # RMS: a noisy room through a kiosk microphone, well above the VAD's floor


def _at_level(samples: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(samples**2))) or 1.0
    return samples * (10 ** (level_dbfs / 20) / rms)


def pink(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (power falls 3 dB per octave)."""
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # keep DC finite; it is removed below anyway
    spectrum /= np.sqrt(freqs)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n_samples)


def noise_clips(duration_sec: float = 4.0, seed: int = 16) -> dict[str, bytes]:
    """{name: mono pcm16 at 16 kHz} for silence, white noise, pink noise and a 50 Hz hum."""
    n = int(duration_sec * SAMPLE_RATE_HZ)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE_HZ
    # A hum carries harmonics (rectifiers, transformers): the 3rd and 5th make it sound like one.
    hum = np.sin(2 * np.pi * HUM_HZ * t) + 0.3 * np.sin(6 * np.pi * HUM_HZ * t) + 0.1 * np.sin(10 * np.pi * HUM_HZ * t)
    signals = {
        "silence": np.zeros(n),
        "white": _at_level(rng.standard_normal(n), LEVEL_DBFS),
        "pink": _at_level(pink(n, rng), LEVEL_DBFS),
        "hum_50hz": _at_level(hum, LEVEL_DBFS),
    }
    return {name: (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes() for name, x in signals.items()}
