"""WebM and MP4/M4A uploads, what browsers' MediaRecorder produces (Chrome and Firefox: Opus in WebM;
Safari: AAC in MP4), decoded with PyAV (FFmpeg's demuxers and decoders; installed with faster-whisper).

libsndfile has no reader for either container, so `appliance.uploads` hands them here once their
magic bytes say which they are. The demuxer is named, never probed: FFmpeg's probe could pick a
playlist or concat demuxer that opens other files or URLs, while Matroska and MP4 read only the bytes
given. Only audio codecs a recorder or an encoder puts in these containers are decoded; a file with no
audio track, another codec, or a stream FFmpeg cannot read is ERR1003. Frames come out one at a time,
mixed down to mono float32 at the file's rate, so memory stays the upload plus a frame.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.container import InputContainer

from appliance.errors import ApplianceError

# Our container name → FFmpeg's demuxer (its `matroska` reads WebM too; `mp4` is the mov demuxer).
DEMUXERS = {"WEBM": "matroska", "MP4": "mp4"}
CODECS = {"WEBM": {"opus", "vorbis"}, "MP4": {"aac", "mp3", "mp3float", "opus", "alac", "flac"}}
EBML_MAGIC = b"\x1a\x45\xdf\xa3"  # a Matroska/WebM file begins with its EBML header


def sniff(data: bytes) -> str | None:
    """WEBM or MP4 from the first bytes (an MP4/M4A file begins with its `ftyp` box); None otherwise."""
    if data[:4] == EBML_MAGIC:
        return "WEBM"
    if data[4:8] == b"ftyp":
        return "MP4"
    return None


class AvAudio:
    """One WebM or MP4 file, opened, its audio track found and its first frame decoded (so a file
    whose audio cannot be read is refused before any is streamed)."""

    def __init__(self, data: bytes, container: str):
        self.container = container
        try:
            self._file: InputContainer = av.open(io.BytesIO(data), mode="r", format=DEMUXERS[container])
        except (av.FFmpegError, ValueError, OSError) as err:
            raise refusal(container, err, "could not be opened") from None
        try:
            audio = [s for s in self._file.streams if s.type == "audio"]
            if not audio:
                raise ApplianceError("ERR1003", f"the uploaded {container} file has no audio track")
            self._stream = audio[0]
            context = self._stream.codec_context  # None when FFmpeg has no decoder for what the track claims
            codec = context.name if context is not None else "of an unknown codec"
            if codec not in CODECS[container]:
                raise ApplianceError("ERR1003", f"the {container} file's audio is {codec}; this server decodes "
                                     f"{', '.join(sorted(CODECS[container]))} in {container}")
            self._stream.codec_context.thread_count = 1  # a decode child needs no thread pool
            self._frames = self._decode()
            try:
                first = next(self._frames, None)
            except (av.FFmpegError, ValueError, OSError) as err:
                raise refusal(container, err, "could not be decoded") from None
            if first is None:
                raise ApplianceError("ERR1003", f"the uploaded {container} file holds no audio frames")
        except BaseException:
            self._file.close()
            raise
        self._first: np.ndarray | None = first[1]
        self.sample_rate_hz, self.channels = first[0], first[2]
        self.duration_sec = self._duration()

    def _duration(self) -> float:
        """From the header; 0 when it gives none (MediaRecorder's WebM is written live, with no duration)."""
        stream = self._stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self._file.duration:
            return self._file.duration / av.time_base
        return 0.0

    def _decode(self) -> Iterator[tuple[int, np.ndarray, int]]:
        """(rate, mono float32, channels) per decoded frame."""
        to_float = av.AudioResampler(format="fltp")  # sample format only: the rate and channels stay
        for packet in self._file.demux(self._stream):
            for frame in packet.decode():
                if not isinstance(frame, AudioFrame):
                    continue
                for planar in to_float.resample(frame):
                    samples = planar.to_ndarray()
                    if samples.size:
                        yield planar.sample_rate, samples.mean(axis=0, dtype=np.float32), samples.shape[0]

    def chunks(self) -> Iterator[np.ndarray]:
        """The audio as mono float32 at `sample_rate_hz`; ERR1003 when the stream breaks or changes rate."""
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            for rate, mono, _ in self._frames:
                if rate != self.sample_rate_hz:
                    raise ApplianceError("ERR1003", f"the {self.container} file's audio changes sample rate from "
                                         f"{self.sample_rate_hz} to {rate} Hz")
                yield mono
        except (av.FFmpegError, ValueError, OSError) as err:
            raise refusal(self.container, err, "could not be decoded") from None
        finally:
            self._file.close()

    def close(self) -> None:
        self._file.close()


def refusal(container: str, err: Exception, what: str) -> ApplianceError:
    text = (str(err).splitlines() or [type(err).__name__])[0][:160]
    return ApplianceError("ERR1003", f"the uploaded {container} file {what}: {text}")
