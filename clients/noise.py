"""Noise made by code, mixed into speech at a chosen SNR: accuracy in noise without noise recordings.

`noisy_copies` writes each corpus recording with white (Gaussian), pink (1/f, shaped in the
frequency domain) or babble (other recordings of the corpus summed at random offsets) noise at
`snr_db` against the recording's own RMS. Seeded, so runs compare. Used by bench/wer.py and the
corpus tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

NOISES = ("white", "pink", "babble")
BABBLE_TALKERS = 6


def noise_like(kind: str, samples: int, rate_hz: int, rng: np.random.Generator, talkers: list[np.ndarray]
               ) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(samples)
    if kind == "pink":  # white noise with its spectrum scaled by 1/sqrt(f): power falls 3 dB per octave
        spectrum = np.fft.rfft(rng.standard_normal(samples))
        freqs = np.fft.rfftfreq(samples, 1 / rate_hz)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0
        return np.fft.irfft(spectrum, samples)
    babble = np.zeros(samples)
    for voice in rng.choice(len(talkers), size=min(BABBLE_TALKERS, len(talkers)), replace=False):
        speech = np.tile(talkers[voice], int(np.ceil(samples / len(talkers[voice]))) + 1)
        offset = int(rng.integers(len(talkers[voice])))
        babble += speech[offset:offset + samples] / (np.sqrt(np.mean(talkers[voice] ** 2)) + 1e-9)
    return babble


def noisy_copies(corpus, kind: str, snr_db: float, out_dir: Path, seed: int = 7) -> list[Path]:
    """Each recording with `kind` noise at `snr_db` (16 kHz mono WAV under `out_dir`)."""
    rng = np.random.default_rng(seed)
    clean = []
    for item in corpus:
        audio, rate_hz = sf.read(str(item.path), dtype="float64", always_2d=True)
        audio = audio.mean(axis=1)
        if rate_hz != 16_000:
            import soxr

            audio = soxr.resample(audio, rate_hz, 16_000)
        clean.append(audio)
    paths = []
    for n, (item, audio) in enumerate(zip(corpus, clean, strict=True)):
        others = [a for m, a in enumerate(clean) if m != n]
        noise = noise_like(kind, len(audio), 16_000, rng, others)
        gain = np.sqrt(np.mean(audio ** 2)) / (np.sqrt(np.mean(noise ** 2)) + 1e-12) / 10 ** (snr_db / 20)
        mixed = audio + gain * noise
        mixed /= max(1.0, np.abs(mixed).max() / 0.99)  # no clipping: scale down if the sum passes full scale
        path = out_dir / f"{item.path.stem}.{kind}{snr_db:g}dB.wav"
        sf.write(str(path), mixed.astype(np.float32), 16_000)
        paths.append(path)
    return paths
