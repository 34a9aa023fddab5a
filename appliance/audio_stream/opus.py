"""Opus packets to 16 kHz mono int16, through libopus (PyAV's codec context: a decoder alone, no
FFmpeg demuxer or parser sees the stream). The header goes to the decoder as its extradata, so it
drops the stream's pre-skip itself (measured: the output lines up with the input to a sample at
16 kHz); every packet's output is checked against Opus's longest (120 ms) before it is used."""

from __future__ import annotations

import av
from av.audio.frame import AudioFrame

from appliance.audio_stream.head import OpusHead
from appliance.audio_stream.limits import MAX_SAMPLES_PER_PACKET, OPUS_RATE_HZ, refuse

OUT_RATE_HZ = 16_000
DECODERS = ("libopus", "opus")  # libopus first (the reference decoder); FFmpeg's own where it is missing


def _codec_context(head: OpusHead) -> av.AudioCodecContext:
    for name in DECODERS:
        try:
            context = av.CodecContext.create(name, "r")
        except (av.FFmpegError, ValueError):
            continue
        assert isinstance(context, av.AudioCodecContext)
        context.extradata = head.raw
        context.sample_rate = OPUS_RATE_HZ
        context.layout = "stereo" if head.channels == 2 else "mono"
        context.thread_count = 1
        context.open()
        return context
    raise RuntimeError("this PyAV build has no Opus decoder")


class OpusDecoder:
    def __init__(self, head: OpusHead):
        self._context = _codec_context(head)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUT_RATE_HZ)

    def decode(self, packet: bytes) -> bytes:
        """One packet's audio, 16 kHz mono int16 (possibly empty while the resampler fills)."""
        try:
            frames = self._context.decode(av.Packet(packet))
        except (av.FFmpegError, ValueError) as err:
            text = (str(err).splitlines() or [type(err).__name__])[0][:120]
            raise refuse(f"an Opus packet could not be decoded ({text})") from None
        out = []
        for frame in frames:
            if not isinstance(frame, AudioFrame) or frame.samples > MAX_SAMPLES_PER_PACKET:
                raise refuse("an Opus packet decoded to more than 120 ms of audio")
            for resampled in self._resampler.resample(frame):
                out.append(resampled.to_ndarray().reshape(-1).astype("<i2", copy=False).tobytes())
        return b"".join(out)

