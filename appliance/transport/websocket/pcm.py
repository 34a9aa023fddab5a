"""Binary WebSocket messages of linear16 audio as the pipeline's chunks: 16-bit mono at the client's rate.

A client may cut its audio anywhere (an SDK sends what its recorder gives it), so a message that ends
inside a frame keeps the remainder for the next one. Channels are mixed into one; a long message is
split into pieces the stream gate accepts (server.max_chunk_ms).
"""

from __future__ import annotations

import hashlib

import numpy as np

PIECE_SEC = 0.5  # well under any server.max_chunk_ms an operator would set


class Linear16:
    def __init__(self, sample_rate_hz: int, channels: int):
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self._frame_bytes = 2 * channels
        self._rest = b""
        self.frames = 0  # received, per channel
        self.sha256 = hashlib.sha256()

    @property
    def duration_sec(self) -> float:
        return self.frames / self.sample_rate_hz

    def pieces(self, message: bytes) -> list[bytes]:
        """Whole frames of `message` (after what the last one left), mono 16-bit, in pieces of at most PIECE_SEC."""
        self.sha256.update(message)
        data = self._rest + message
        whole = len(data) - len(data) % self._frame_bytes
        data, self._rest = data[:whole], data[whole:]
        if not data:
            return []
        samples = np.frombuffer(data, dtype="<i2")
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1).round().astype("<i2")
        self.frames += len(samples)
        step = max(1, int(self.sample_rate_hz * PIECE_SEC))
        return [samples[i:i + step].tobytes() for i in range(0, len(samples), step)]

    @staticmethod
    def silence(sample_rate_hz: int, seconds: float) -> bytes:
        return bytes(2 * int(sample_rate_hz * seconds))
