"""What a client needs to resume a stream after a dropped connection (DESIGN.md §11).

`AudioTape` keeps the audio of one stream from the latest resume point on: the pacer appends chunks
as the source gives them, each call reads from where it starts (the first from 0, a resumed one from
the ticket's `resume_from_sec`), and every resume point the server hands back trims what is no longer
needed. `ResumePolicy` says which failures are worth re-dialing for and how long to keep trying.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

# A failure with one of these statuses and no ERR code came from the connection, not the server's
# verdict: the connection dropped (UNAVAILABLE), a proxy reset the stream (INTERNAL, UNKNOWN), or the
# server went away mid-call (CANCELLED).
_CONNECTION_STATUSES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED})
# Codes a re-dial may meet on its way back, and waits out: a draining node (ERR1015), a node at
# capacity (ERR1007, ERR1008, ERR1014), or the node that still holds the old call (ERR1002).
_RETRY_CODES = frozenset({"ERR1015", "ERR1007", "ERR1008", "ERR1014", "ERR1002"})


@dataclass(frozen=True)
class ResumePolicy:
    enabled: bool = True
    give_up_after_sec: float = 60.0  # re-dialing stops this long after the connection dropped
    max_kept_sec: float = 120.0  # audio kept for a resume; older is dropped (a resume before it fails)
    first_backoff_sec: float = 0.2
    max_backoff_sec: float = 2.0
    resend_chunk_sec: float = 1.0  # audio resent after a drop goes in chunks this long

    def backoff_sec(self, attempt: int) -> float:
        return min(self.max_backoff_sec, self.first_backoff_sec * 2 ** max(0, attempt - 1))


NO_RESUME = ResumePolicy(enabled=False)


def dropped(code: str | None, status: grpc.StatusCode | None) -> bool:
    """Whether a stream that failed this way lost its connection (or was drained), so resuming it
    can lose nothing: as opposed to the server refusing it."""
    return code == "ERR1015" or (code is None and status in _CONNECTION_STATUSES)


def worth_retrying(code: str | None, status: grpc.StatusCode | None) -> bool:
    """Whether a re-dial that failed this way may succeed on a later try."""
    return dropped(code, status) or code in _RETRY_CODES


class AudioTapeGap(Exception):
    """The audio a resume must resend from is no longer kept (past ResumePolicy.max_kept_sec)."""


class AudioTape:
    """One stream's audio as 16-bit mono chunks on a sample timeline. Thread-safe: the pacer appends,
    one call at a time reads, the result thread trims."""

    def __init__(self, sample_rate_hz: int, max_kept_sec: float):
        self._rate = sample_rate_hz
        self._max_kept_samples = int(max_kept_sec * sample_rate_hz)
        self._chunks: deque[tuple[int, bytes]] = deque()  # (first sample, pcm16)
        self._kept_from = 0  # first sample still kept
        self._end = 0  # samples appended so far
        self._sent_until = 0  # samples some call has already sent (latency counts the first send)
        self._finished = False
        self._changed = threading.Condition()

    @property
    def end_sec(self) -> float:
        with self._changed:
            return self._end / self._rate

    @property
    def kept_from_sec(self) -> float:
        """Where the audio still kept begins: a read from before it fails with AudioTapeGap."""
        with self._changed:
            return self._kept_from / self._rate

    def append(self, pcm16: bytes) -> float:
        """Add the next chunk; returns where it ends (seconds)."""
        with self._changed:
            self._chunks.append((self._end, pcm16))
            self._end += len(pcm16) // 2
            self._drop_old()
            self._changed.notify_all()
            return self._end / self._rate

    def _drop_old(self) -> None:
        """Forget audio that has been sent and is older than max_kept_sec (audio not yet sent is
        always kept: the call still has to send it)."""
        while self._chunks:
            start, chunk = self._chunks[0]
            end = start + len(chunk) // 2
            if end > self._sent_until or self._end - start <= self._max_kept_samples:
                return
            self._chunks.popleft()
            self._kept_from = end

    def finish(self) -> None:
        """The source has no more audio."""
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def trim(self, before_sec: float) -> None:
        """The server needs nothing before `before_sec` any more (a resume point)."""
        before = round(before_sec * self._rate)
        with self._changed:
            while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) // 2 <= before:
                start, chunk = self._chunks.popleft()
                self._kept_from = start + len(chunk) // 2

    def read(self, from_sec: float, stop: threading.Event, merge_samples: int = 0
             ) -> Iterator[tuple[bytes, float, bool]]:
        """(pcm16, end in seconds, first time sent) from `from_sec` on, waiting for the pacer, until
        the tape is finished or `stop` is set. Audio a call sends again is merged into chunks of up
        to `merge_samples` (a resend goes out in a few messages, not hundreds). AudioTapeGap if the
        audio from `from_sec` is no longer kept."""
        position = round(from_sec * self._rate)
        while not stop.is_set():
            with self._changed:
                if position < self._kept_from:
                    raise AudioTapeGap(f"audio from {from_sec:.2f} s is no longer kept (kept from "
                                       f"{self._kept_from / self._rate:.2f} s)")
                piece = self._take(position, merge_samples)
                if piece is None:
                    if self._finished:
                        return
                    self._changed.wait(timeout=0.1)
                    continue
                first_send = position + len(piece) // 2 > self._sent_until
                position += len(piece) // 2
                self._sent_until = max(self._sent_until, position)
                self._drop_old()
            yield piece, position / self._rate, first_send

    def _take(self, position: int, merge_samples: int) -> bytes | None:
        """Audio from `position`: to the end of the chunk holding it, and the chunks after it while
        the piece stays within `merge_samples`. None when the tape has nothing there yet."""
        parts: list[bytes] = []
        taken = 0
        for start, chunk in self._chunks:
            end = start + len(chunk) // 2
            if end <= position:
                continue
            part = chunk[2 * max(0, position + taken - start):]
            # Only resent audio is merged: audio going out the first time keeps the caller's chunks.
            if parts and (taken + len(part) // 2 > merge_samples or start >= self._sent_until):
                break
            parts.append(part)
            taken += len(part) // 2
        return b"".join(parts) if parts else None
