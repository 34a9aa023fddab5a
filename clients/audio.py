"""Loading audio files into what the API carries: mono signed 16-bit little-endian PCM.

Audio keeps its native sample rate: the server resamples (AudioChunk.sample_rate_hz
says what it gets), so resampling here would only add a second, lossy pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from appliance.errors import ApplianceError
from appliance.upload_av import AvAudio, sniff

_INT16_SCALE = 32768.0  # soundfile maps int16 -32768..32767 onto -1.0..(1 - 2**-15)


def load_pcm16(path: str | Path) -> tuple[bytes, int]:
    """Read a WAV/FLAC/OGG/MP3 file (libsndfile) or a WebM/MP4/M4A recording (PyAV, as the server
    decodes uploads); return (mono pcm16 little-endian bytes, sample_rate_hz).

    Multi-channel audio is mixed down to mono by averaging the channels; float
    samples outside -1..1 are clipped rather than wrapped.
    Raises FileNotFoundError for a missing path and ValueError for an unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    with path.open("rb") as f:
        kind = sniff(f.read(16))
    if kind is not None:
        try:
            audio = AvAudio(path.read_bytes(), kind)
            return float_to_pcm16(np.concatenate(list(audio.chunks()))), audio.sample_rate_hz
        except ApplianceError as err:
            raise ValueError(f"cannot read audio file {path}: {err.message}") from None
    try:
        samples, sample_rate_hz = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"cannot read audio file {path}: {err} "
                         "(WAV, FLAC, OGG, MP3, WebM and MP4/M4A are supported)") from err
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return float_to_pcm16(mono), int(sample_rate_hz)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Convert float samples (nominal range -1..1) to int16 little-endian bytes, clipping."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * _INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def pcm16_duration_sec(pcm16: bytes, sample_rate_hz: int) -> float:
    """Duration of mono pcm16 audio, seconds."""
    return len(pcm16) / 2 / sample_rate_hz
