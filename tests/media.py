"""Compressed recordings made at test time with PyAV (FFmpeg's encoders), in the containers browsers
and phones record: Opus in WebM (Chrome, Firefox), AAC in MP4 and M4A (Safari, phones), and MP3."""

from __future__ import annotations

import io

import av
import numpy as np

# name → (FFmpeg muxer, encoder, sample rate): each at the rate its recorder would use.
ENCODINGS = {
    "webm": ("webm", "libopus", 48_000),
    "mp4": ("mp4", "aac", 44_100),
    "m4a": ("ipod", "aac", 48_000),  # the ipod muxer writes .m4a (ftyp M4A)
    "mp3": ("mp3", "libmp3lame", 22_050),
}
FRAME_SAMPLES = 960


def encode(samples: np.ndarray, rate_hz: int, name: str, *, channels: int = 2) -> bytes:
    """Mono float32 `samples` at `rate_hz`, resampled (linearly: good enough for speech) to the
    encoding's rate, copied to `channels` and encoded into `name`'s container."""
    muxer, codec, out_rate = ENCODINGS[name]
    positions = np.arange(0, len(samples), rate_hz / out_rate)
    audio = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
    planes = np.ascontiguousarray(np.repeat(audio[None, :], channels, axis=0))
    layout = "stereo" if channels == 2 else "mono"
    out = io.BytesIO()
    with av.open(out, "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        for start in range(0, planes.shape[1], FRAME_SAMPLES):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start:start + FRAME_SAMPLES]),
                                               format="fltp", layout=layout)
            frame.sample_rate = out_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
