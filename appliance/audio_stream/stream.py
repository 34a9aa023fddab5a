"""`ContainerOpus`: a live stream's binary messages (Ogg or WebM Opus, cut anywhere) as 16 kHz mono
int16 pieces for the push path, with the interface of the door's `Linear16` (pieces, sample_rate_hz,
channels, duration_sec, sha256)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from appliance.audio_stream.limits import PACKET_ALLOWANCE, PACKETS_PER_AUDIO_SEC, refuse
from appliance.audio_stream.ogg import CAPTURE, OggOpus
from appliance.audio_stream.opus import OUT_RATE_HZ, OpusDecoder
from appliance.audio_stream.webm import WebmOpus

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
PIECE_SAMPLES = OUT_RATE_HZ // 2  # 0.5 s, as Linear16's pieces


def sniff(first: bytes) -> OggOpus | WebmOpus | None:
    """The demuxer for a stream that begins with `first`; None until enough bytes came to tell."""
    if len(first) < 4:
        if CAPTURE.startswith(first) or EBML_MAGIC.startswith(first):
            return None
    elif first.startswith(CAPTURE):
        return OggOpus()
    elif first.startswith(EBML_MAGIC):
        return WebmOpus()
    raise refuse("the stream is neither Ogg nor WebM (it begins with neither header): containerized audio "
                 "here is Opus in Ogg or WebM; send raw PCM with encoding=linear16 and sample_rate")


class ContainerOpus:
    sample_rate_hz = OUT_RATE_HZ

    def __init__(self) -> None:
        self._demuxer: OggOpus | WebmOpus | None = None
        self._start = b""  # the first bytes, until they say which container this is
        self._decoder: OpusDecoder | None = None
        self.frames = 0  # decoded, at 16 kHz
        self.packets = 0
        self.sha256 = hashlib.sha256()

    @property
    def channels(self) -> int:
        head = self._demuxer.head if self._demuxer is not None else None
        return head.channels if head is not None else 1

    @property
    def duration_sec(self) -> float:
        return self.frames / OUT_RATE_HZ

    def pieces(self, message: bytes) -> Iterator[bytes]:
        """The audio `message` completes, in pieces of at most 0.5 s, decoded as they are taken."""
        self.sha256.update(message)
        if self._demuxer is None:
            self._start += message
            self._demuxer = sniff(self._start[:4])
            if self._demuxer is None:
                return
            message, self._start = self._start, b""
        pending = b""
        for packet in self._demuxer.feed(message):
            self._count_packet()
            if not packet:
                continue  # an empty packet: nothing to decode
            if self._decoder is None:
                assert self._demuxer.head is not None
                self._decoder = OpusDecoder(self._demuxer.head)
            pcm = self._decoder.decode(packet)
            self.frames += len(pcm) // 2
            pending += pcm
            while len(pending) >= 2 * PIECE_SAMPLES:
                yield pending[:2 * PIECE_SAMPLES]
                pending = pending[2 * PIECE_SAMPLES:]
        if pending:
            yield pending

    def _count_packet(self) -> None:
        self.packets += 1
        if self.packets > PACKETS_PER_AUDIO_SEC * self.duration_sec + PACKET_ALLOWANCE:
            raise refuse(f"{self.packets} Opus packets for {self.duration_sec:.1f} s of audio: at most "
                         f"{PACKETS_PER_AUDIO_SEC} a second of audio are accepted")
