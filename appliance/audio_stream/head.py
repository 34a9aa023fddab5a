"""The Opus identification header (`OpusHead`, RFC 7845 §5.1): in an Ogg stream its first packet, in
WebM the track's CodecPrivate. Only channel mapping family 0 (mono or stereo, what browsers and
voice encoders write) is taken."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from appliance.audio_stream.limits import refuse

MAGIC = b"OpusHead"
MIN_BYTES = 19


@dataclass(frozen=True)
class OpusHead:
    channels: int
    pre_skip: int  # 48 kHz samples to drop at the start
    input_rate_hz: int  # what the encoder was given (informational)
    raw: bytes  # the header as sent: the decoder's extradata

    @classmethod
    def parse(cls, data: bytes) -> OpusHead:
        if len(data) < MIN_BYTES or not data.startswith(MAGIC):
            raise refuse("the stream's first packet is not an Opus header (OpusHead): this door decodes Opus "
                         "only (Ogg or WebM), or raw audio with encoding=linear16")
        version, channels, pre_skip, input_rate, _gain, family = struct.unpack_from("<BBHIhB", data, 8)
        if version >> 4:
            raise refuse(f"Opus header version {version}: only version 0.x streams are decoded")
        if family != 0 or channels not in (1, 2):
            raise refuse(f"Opus stream of {channels} channels (mapping family {family}): only mono and stereo "
                         "(family 0) are decoded")
        return cls(channels=channels, pre_skip=pre_skip, input_rate_hz=input_rate, raw=bytes(data[:MIN_BYTES]))

    @classmethod
    def default(cls, channels: int, pre_skip: int = 0) -> OpusHead:
        """For a WebM track that names its channels but carries no CodecPrivate."""
        if channels not in (1, 2):
            raise refuse(f"Opus track of {channels} channels: only mono and stereo are decoded")
        raw = MAGIC + struct.pack("<BBHIhB", 1, channels, pre_skip, 48_000, 0, 0)
        return cls(channels=channels, pre_skip=pre_skip, input_rate_hz=48_000, raw=raw)
