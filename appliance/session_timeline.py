"""A session's timeline as this node sent it: how far back a resume may go, and what it may not repeat.

A resume never rewinds the timeline: no result is sent again for an utterance this node already
finalized, so the session's transcript (the client's and the transcript log's) never changes after
the fact. Two rules keep that without losing a final that was in flight when the connection dropped:

- **Delivered results are not revisited.** A resume point (a ticket's next utterance index) older
  than one this node knows its client received is refused (ERR1005). The server cannot see what
  reached the client, so it counts a token as delivered once the client went on sending audio for
  IN_FLIGHT_SEC after it went out: an honest client (the SDK) resumes with the latest token it
  received, which is never older than that. A replayed old token (from 0.0 s after finals past it
  went out) is refused.
- **Finals possibly in flight are sent again verbatim.** A resume from a point within the in-flight
  margin re-decodes the resent audio, but each final for an index this node already finalized goes
  out as the copy first sent (same text, timings and words, a fresh resume token), and partials and
  speech events of those utterances are dropped. An honest client that missed the final gets it;
  nobody gets a different text for the same index.

All of this is node-local: a node that adopts a session from a ticket knows nothing of what another
node sent, and resumes from the ticket's point.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from appliance.errors import ApplianceError
from appliance.streaming.listeners import StreamListener
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.types import RecognitionResult

IN_FLIGHT_SEC = 5.0  # audio kept arriving this long after a token went out: its client received it
MAX_ISSUED_POINTS = 64  # tokens not yet known delivered (a few seconds' worth: checkpoints are 2 s apart)
MAX_KEPT_FINALS = 16  # finals kept to send again verbatim (only the last few seconds' can be in flight)


class SessionTimeline:
    """What one session's calls on this node sent. Touched on the event loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.finalized = -1  # the highest utterance index whose final this node sent
        self._issued: deque[tuple[float, ResumePoint]] = deque(maxlen=MAX_ISSUED_POINTS)
        self._delivered = START
        self._finals: OrderedDict[int, RecognitionResult] = OrderedDict()
        self._last_chunk_at = float("-inf")

    def chunk_received(self) -> None:
        self._last_chunk_at = self._clock()

    def token_issued(self, point: ResumePoint) -> None:
        self._issued.append((self._clock(), point))

    def result_sent(self, result: RecognitionResult) -> None:
        if not result.is_final:
            return
        index = result.utterance_index
        self.finalized = max(self.finalized, index)
        self._finals[index] = result
        self._finals.move_to_end(index)
        while len(self._finals) > MAX_KEPT_FINALS:
            self._finals.popitem(last=False)

    def delivered(self) -> ResumePoint:
        """The latest resume point its client has surely received (see the module docstring)."""
        cutoff = self._last_chunk_at - IN_FLIGHT_SEC
        while self._issued and self._issued[0][0] <= cutoff:
            point = self._issued.popleft()[1]
            if point.next_utterance_index >= self._delivered.next_utterance_index:
                self._delivered = point
        return self._delivered

    def check_resume(self, session_id: str, start: ResumePoint) -> None:
        """ERR1005 when resuming from `start` would go back over results already delivered."""
        delivered = self.delivered()
        if start.next_utterance_index < delivered.next_utterance_index:
            raise ApplianceError(
                "ERR1005", f"session {session_id!r}: this ticket resumes from utterance {start.next_utterance_index}, "
                f"but the session's results up to utterance {delivered.next_utterance_index - 1} were already "
                "delivered; resume with the latest resume_token received")

    def replay_guard(self) -> ReplayGuard:
        """A new call attaches: its filter (it may re-decode utterances already finalized). Tokens
        the previous call sent and its own audio did not prove delivered stay unproven: audio on the
        new call says nothing of what reached the old one."""
        self.delivered()
        self._issued.clear()
        return ReplayGuard(self, self.finalized)

    def copy_of(self, utterance_index: int) -> RecognitionResult | None:
        return self._finals.get(utterance_index)


class ReplayGuard:
    """One call's results, with none for an utterance finalized before the call began except that
    final's first copy (see the module docstring)."""

    def __init__(self, timeline: SessionTimeline, floor: int):
        self._timeline = timeline
        self.floor = floor  # utterance indices up to this one were finalized before this call

    def repeats(self, result: RecognitionResult) -> bool:
        """Whether `result` belongs to an utterance already finalized (checkpoints belong to none)."""
        return result.utterance_index <= self.floor and not result.is_checkpoint

    def outgoing(self, result: RecognitionResult) -> RecognitionResult | None:
        """What goes out for `result`: itself, the first copy of its final, or nothing."""
        if not self.repeats(result):
            return result
        copy = self._timeline.copy_of(result.utterance_index) if result.is_final else None
        if copy is None:
            return None
        return dataclasses.replace(copy, resume_token=result.resume_token, resume_from_sec=result.resume_from_sec)

    def listener(self, inner: StreamListener) -> StreamListener:
        """`inner`, deaf to the results this guard holds back (the transcript log and the metrics
        heard those utterances' finals the first time)."""
        return _GuardedListener(inner, self) if self.floor >= 0 else inner


class _GuardedListener:
    def __init__(self, inner: StreamListener, guard: ReplayGuard):
        self._inner = inner
        self._guard = guard

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        self._inner.audio_received(session_id, pcm16, sample_rate_hz)

    def result_sent(self, result: RecognitionResult) -> None:
        if not self._guard.repeats(result):
            self._inner.result_sent(result)

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None:
        self._inner.stream_ended(session_id, error)
