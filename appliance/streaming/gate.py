"""Stage 1, attach/gate: may this chunk enter the session, and is it well-formed and within budget?

Runs on the event loop for every chunk before any audio work: the session ticket (on every chunk
with `require_token`; the first chunk's is checked before the stream attaches), the chunk's
session id, the caller's byte-rate budget (ERR1006), the chunk's rate and size (ERR1003) and the
session's audio caps (ERR1013: seconds, and bytes for a batch upload). An empty chunk (a
keep-alive or the token-only first chunk) passes the checks and carries no audio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.audio import validate_chunk
from appliance.errors import ApplianceError
from appliance.security.limiter import TokenBucket
from appliance.security.tickets import tokens_match
from appliance.streaming.session import SessionSettings
from appliance.streaming.types import AudioIn, StreamLimits


@dataclass(frozen=True)
class AcceptedAudio:
    pcm16: bytes
    sample_rate_hz: int
    duration_sec: float


class StreamGate:
    def __init__(self, settings: SessionSettings, limits: StreamLimits,
                 byte_budget: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._limits = limits
        self._byte_budget = byte_budget  # raises ERR1006 past the caller's inbound byte rate
        self._clock = clock
        # Every message costs an event-loop turn and a frontend pass whatever it carries, so messages
        # are paced per stream (`chunk_wait_sec`), however few bytes they hold.
        rate = limits.max_chunks_per_sec
        self._chunk_bucket = TokenBucket(rate, 2 * rate, clock()) if rate > 0 else None
        # Batch uploads send a whole file in one chunk: max_chunk_ms does not apply to them.
        batch = settings.upload_mode == "batch"
        # Over its byte rate, a batch upload waits its turn (ERR1006's retry hint) instead of ending:
        # a file arrives as fast as the sender can push it, and pacing it is what the budget is for.
        self.paces_byte_rate = batch
        self._max_chunk_ms = None if batch else limits.max_chunk_ms
        # A batch upload is decoded as fast as it arrives, not at speaking pace: its size is capped too.
        self._max_bytes = limits.max_batch_upload_bytes if batch else None
        self.audio_sec_received = 0.0
        self.bytes_received = 0

    def chunk_wait_sec(self) -> float:
        """0 when the next chunk may be read now (and its message is counted), else the seconds until
        it may: the stream's shell waits that long before reading, and gRPC flow control slows the
        sender (server.max_chunks_per_sec)."""
        if self._chunk_bucket is None:
            return 0.0
        return self._chunk_bucket.take(1, self._clock())

    def admit(self, chunk: AudioIn) -> AcceptedAudio | None:
        """The chunk's audio once every check passed; None for a chunk without audio."""
        settings = self._settings
        if settings.require_token and not tokens_match(chunk.session_token, settings.token):
            raise ApplianceError("ERR1005", "session_token does not match the ticket issued by CreateSession "
                                 "(require_token: every chunk carries it)")
        if chunk.session_id and chunk.session_id != settings.session_id:
            raise ApplianceError(
                "ERR1003",
                f"chunk session_id {chunk.session_id[:64]!r} differs from the stream's {settings.session_id!r}")
        if not chunk.pcm16:
            return None
        if self._byte_budget is not None:
            self._byte_budget(len(chunk.pcm16))
        rate_hz = chunk.sample_rate_hz or self._limits.default_sample_rate_hz
        duration_sec = validate_chunk(chunk.pcm16, rate_hz, self._max_chunk_ms)
        self.audio_sec_received += duration_sec
        self.bytes_received += len(chunk.pcm16)
        if self._max_bytes and self.bytes_received > self._max_bytes:
            raise ApplianceError(
                "ERR1013", f"batch upload sent {self.bytes_received} bytes of audio; "
                f"server.max_batch_upload_bytes is {self._max_bytes}")
        cap_sec = self._limits.max_audio_sec_per_session
        if cap_sec and self.audio_sec_received > cap_sec:
            raise ApplianceError(
                "ERR1013", f"session sent {self.audio_sec_received:.1f} s of audio; "
                f"server.max_audio_seconds_per_session is {cap_sec:g} s")
        return AcceptedAudio(chunk.pcm16, rate_hz, duration_sec)
