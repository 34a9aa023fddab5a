"""PCM handling for the hot path: validation, int16 decoding, streaming resampling to 16 kHz, RMS.

Everything downstream of this module sees mono float32 at `MODEL_SAMPLE_RATE_HZ`.
"""

from __future__ import annotations

import numpy as np

from appliance.errors import ApplianceError

MODEL_SAMPLE_RATE_HZ = 16_000
MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 48_000
_INT16_SCALE = 1.0 / 32768.0


def validate_chunk(pcm16: bytes, sample_rate_hz: int, max_chunk_ms: float | None) -> float:
    """Check one chunk and return its duration in seconds; ERR1003 names what is wrong."""
    if not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise ApplianceError(
            "ERR1003",
            f"sample_rate_hz={sample_rate_hz} is outside the accepted range "
            f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz",
        )
    if len(pcm16) % 2:
        raise ApplianceError(
            "ERR1003",
            f"pcm16 has {len(pcm16)} bytes; 16-bit mono PCM needs an even byte count",
        )
    duration_sec = len(pcm16) / 2 / sample_rate_hz
    if max_chunk_ms and duration_sec * 1000.0 > max_chunk_ms:
        raise ApplianceError(
            "ERR1003",
            f"chunk holds {duration_sec * 1000.0:.0f} ms of audio; server.max_chunk_ms is {max_chunk_ms:g} ms "
            "(send smaller chunks, or upload_mode=batch for whole-file uploads)",
        )
    return duration_sec


def pcm16_to_float32(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float32) * _INT16_SCALE


def rms(samples: np.ndarray) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


class StreamResampler:
    """Resamples one stream's audio to 16 kHz, keeping filter state across chunks.

    The input rate is fixed by the first chunk; a stream that changes rate midway gets ERR1003,
    because the filter state (and the session timeline) would silently go wrong.
    """

    def __init__(self) -> None:
        self._input_rate_hz: int | None = None
        self._resampler = None

    def __call__(self, samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
        if self._input_rate_hz is None:
            self._input_rate_hz = sample_rate_hz
            if sample_rate_hz != MODEL_SAMPLE_RATE_HZ:
                import soxr  # imported lazily: most streams arrive at 16 kHz already

                self._resampler = soxr.ResampleStream(
                    sample_rate_hz, MODEL_SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ"
                )
        elif sample_rate_hz != self._input_rate_hz:
            raise ApplianceError(
                "ERR1003",
                f"sample_rate_hz changed from {self._input_rate_hz} to {sample_rate_hz} within one stream",
            )
        if self._resampler is None:
            return samples
        return self._resampler.resample_chunk(samples)

    def flush(self) -> np.ndarray:
        """The samples the filter still holds; call once at end of stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
