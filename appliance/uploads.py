"""Uploaded audio files (the OpenAI-compatible API's `file`): sniff the container, check it, and
decode it block by block into 16 kHz 16-bit mono, the form a stream takes.

The container is recognised from the bytes, never from the file name or the part's content type a
client declares: WebM and MP4/M4A by their magic bytes (decoded with PyAV, `appliance.upload_av`),
everything else by libsndfile (through soundfile), which reads WAV, FLAC, OGG and MP3. Decoding is
incremental, so memory is the upload itself plus one block however long the audio is;
`DecodedUpload.blocks` runs on the caller's thread (in the appliance, a decoder child:
`appliance.decoder_sandbox`), keeping the event loop free of codec and resampler work.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.errors import ApplianceError
from appliance.upload_av import AvAudio, sniff

# libsndfile's names for the containers an upload may be in (WAVEX: WAV with an extensible header).
ACCEPTED_FORMATS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}
MIN_FILE_RATE_HZ = 8_000
MAX_FILE_RATE_HZ = 192_000
MAX_CHANNELS = 8
ACCEPTED = "WAV, FLAC, OGG (Vorbis or Opus), MP3, WebM (Opus) or MP4/M4A (AAC)"
BLOCK_SEC = 5.0  # pushed into the stream per step: large enough to be cheap, small enough to bound memory


@dataclass(frozen=True)
class UploadFormat:
    container: str  # WAV, FLAC, OGG, MP3, WEBM or MP4
    sample_rate_hz: int
    channels: int
    duration_sec: float  # from the header; an estimate for MP3; 0 when a WebM file gives none


class DecodedUpload:
    """One uploaded file, opened and checked; `blocks()` yields its audio as 16 kHz pcm16 mono."""

    def __init__(self, data: bytes, *, max_duration_sec: float | None = None):
        if not data:
            raise ApplianceError("ERR1003", "the uploaded file is empty")
        self._data = data
        self._max_duration_sec = max_duration_sec
        kind = sniff(data)
        self._av = AvAudio(data, kind) if kind else None
        try:
            self.format = _av_format(self._av) if self._av else _probe(data)
        except BaseException:
            self.close()
            raise
        if max_duration_sec and self.format.duration_sec > max_duration_sec:
            self.close()
            raise ApplianceError("ERR1013", f"the upload holds {self.format.duration_sec:.0f} s of audio; "
                                 f"this server takes at most {max_duration_sec:.0f} s per session "
                                 "(server.max_audio_seconds_per_session)")
        self.samples_out = 0  # 16 kHz samples yielded so far

    @property
    def decoded_sec(self) -> float:
        return self.samples_out / MODEL_SAMPLE_RATE_HZ

    def close(self) -> None:
        if self._av is not None:
            self._av.close()

    def blocks(self) -> Iterator[bytes]:
        rate = self.format.sample_rate_hz
        resampler = (soxr.ResampleStream(rate, MODEL_SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ")
                     if rate != MODEL_SAMPLE_RATE_HZ else None)
        try:
            for mono in self._mono_blocks():
                # A damaged compressed frame can decode to NaN or huge values: silence and full scale.
                mono = np.clip(np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                if mono.size:
                    yield self._pcm16(mono)
                self._check_length()
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                if tail.size:
                    yield self._pcm16(tail)
        except (sf.LibsndfileError, RuntimeError) as err:  # a stream corrupt past its header
            raise ApplianceError("ERR1003", f"the uploaded {self.format.container} file could not be decoded "
                                 f"after {self.decoded_sec:.1f} s of audio: {_reason(err)}") from None

    def _mono_blocks(self) -> Iterator[np.ndarray]:
        """The file's audio as mono float32 at its own rate, about BLOCK_SEC at a time."""
        block_samples = int(self.format.sample_rate_hz * BLOCK_SEC)
        if self._av is None:
            with sf.SoundFile(io.BytesIO(self._data)) as audio:
                for block in audio.blocks(blocksize=block_samples, dtype="float32", always_2d=True):
                    yield block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            return
        pending: list[np.ndarray] = []
        held = 0
        for frame in self._av.chunks():  # frames of a few ms each: gathered into blocks
            pending.append(frame)
            held += frame.size
            if held >= block_samples:
                yield np.concatenate(pending)
                pending, held = [], 0
        if pending:
            yield np.concatenate(pending)

    def _check_length(self) -> None:
        """A damaged header can make a few KiB decode for hours: the cap holds whatever it claims."""
        if self._max_duration_sec and self.decoded_sec > self._max_duration_sec:
            raise ApplianceError("ERR1013", f"the upload decodes to more than {self._max_duration_sec:.0f} s of audio "
                                 "(server.max_audio_seconds_per_session)")

    def _pcm16(self, samples: np.ndarray) -> bytes:
        self.samples_out += samples.size
        return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()  # the resampler may overshoot


def _av_format(audio: AvAudio) -> UploadFormat:
    _check_shape(audio.sample_rate_hz, audio.channels)
    return UploadFormat(audio.container, audio.sample_rate_hz, audio.channels, audio.duration_sec)


def _check_shape(rate: int, channels: int) -> None:
    if not MIN_FILE_RATE_HZ <= rate <= MAX_FILE_RATE_HZ:
        raise ApplianceError("ERR1003", f"sample rate {rate} Hz: expected {MIN_FILE_RATE_HZ}-{MAX_FILE_RATE_HZ} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ApplianceError("ERR1003", f"{channels} channels: expected 1-{MAX_CHANNELS}")


def _probe(data: bytes) -> UploadFormat:
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            container, rate, channels, frames = audio.format, int(audio.samplerate), int(audio.channels), audio.frames
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ApplianceError("ERR1003", "the uploaded file is not audio this server can decode "
                             f"({_reason(err)}); send {ACCEPTED}") from None
    if container not in ACCEPTED_FORMATS:
        raise ApplianceError("ERR1003", f"audio container {container} is not accepted; send {ACCEPTED}")
    _check_shape(rate, channels)
    return UploadFormat(ACCEPTED_FORMATS[container], rate, channels, max(0, frames) / rate)


def _reason(err: Exception) -> str:
    """libsndfile's own words ("Format not recognised."), without the file object's repr."""
    text = getattr(err, "error_string", None) or str(err) or type(err).__name__
    return text.splitlines()[0][:160]
