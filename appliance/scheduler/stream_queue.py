"""One stream's decodes, in order (`StreamQueue`), and the request each decode travels as.

A stream runs one decode at a time, FIFO, so its results leave in the order its audio arrived and
every partial of an utterance precedes its final; a final supersedes the stream's queued partials
and the one running. The queue keeps the order; the scheduler decides when its head runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, Transcript

if TYPE_CHECKING:
    from appliance.scheduler.decode_scheduler import DecodeScheduler

P = TypeVar("P")


@dataclass(eq=False)
class DecodeRequest(Generic[P]):
    queue: StreamQueue[P]
    audio: np.ndarray
    is_final: bool
    payload: P
    options: DecodeOptions | None  # None: asked of the queue's `prepare` when the request becomes eligible
    enqueued_at: float = field(default_factory=time.monotonic)
    sequence: int = 0  # order of becoming eligible
    deadline: asyncio.TimerHandle | None = None
    superseded: bool = False  # a partial whose final came while it ran: already reported dropped
    speculative: bool = False  # a partial of the final's own audio, decoded as silence began

    @property
    def ordinary_partial(self) -> bool:
        """A partial that only refreshes the text on screen: the first decode to give way."""
        return not (self.is_final or self.speculative)

    @property
    def rank(self) -> int:
        """Dispatch order between kinds: finals (0), speculative partials (1), partials (2)."""
        return 0 if self.is_final else 1 if self.speculative else 2

    def batch_key(self) -> tuple:
        """Requests decoded together share all of this, the encoder window included (a batch is
        encoded on one window, and a window changes what Whisper hears)."""
        q = self.queue
        window = q.backend.window_frames(self.audio.size, provisional=not self.is_final)
        return (id(q.backend), self.options, q.language, q.task, self.is_final, window)


class StreamQueue(Generic[P]):
    """One stream's decodes, in order: queued, eligible (the head, once the stream is idle) or running.

    `prepare(payload)` gives a request's decode options at the moment it becomes eligible, so
    they may depend on the outcome of the stream's previous decode (the prompt after a cut).
    """

    def __init__(self, scheduler: DecodeScheduler, stream_id: str, backend: Backend, *, language: str | None,
                 task: str, on_done: Callable[[P, Transcript | None, ApplianceError | None], None],
                 prepare: Callable[[P], DecodeOptions] | None = None, max_pending: int = 0,
                 client_tuned: bool = False):
        self.stream_id = stream_id
        self.backend = backend
        self.language = language
        self.task = task
        # The client chose decode options: its failures and overruns are its own (ERR1009/1016 for
        # this stream, never counted against health) and its decodes are held to max_decode_sec.
        self.client_tuned = client_tuned
        self._scheduler = scheduler
        self._on_done = on_done
        self._prepare = prepare
        self._max_pending = max_pending  # 0: unbounded
        self._waiting: deque[DecodeRequest[P]] = deque()  # the head is eligible when nothing is running
        self._waiting_partials = 0  # read for every frame of a stream with partials: kept, not counted
        self._running: DecodeRequest[P] | None = None
        self._eligible = False
        self._closed = False
        self.queued_audio_bytes = 0  # the float32 audio held by queued decodes, as the buffer ledger counts
    @property
    def pending(self) -> int:
        """Decodes queued or running."""
        return len(self._waiting) + (self._running is not None)

    @property
    def partial_waiting(self) -> bool:
        """A partial is queued and not yet running."""
        return self._waiting_partials > 0

    def submit(self, audio: np.ndarray, *, is_final: bool, payload: P, options: DecodeOptions | None = None,
               speculative: bool = False) -> None:
        """Queue a decode; its outcome comes back through `on_done`. A partial that finds the queue
        at `max_pending` is dropped at once. A final first drops this stream's queued partials and
        the partial it is running: it supersedes them. A `speculative` partial (the final's own
        audio, decoded as silence began: speech paused) drops the stream's queued partials, whose
        audio it covers, and tells the scheduler that this stream's final is due soon."""
        if self._closed:
            raise RuntimeError(f"stream {self.stream_id}: decode submitted after close")
        speculative = speculative and not is_final
        if is_final:
            self.drop_queued_partials()
            self._supersede_running_partial()
        elif speculative:
            self.drop_queued_partials()
            self._scheduler.final_expected()
        elif self._max_pending and self.pending >= self._max_pending:
            self._scheduler.count_dropped(1)
            self._on_done(payload, None, None)
            return
        self._waiting.append(DecodeRequest(self, audio, is_final, payload, options, speculative=speculative))
        self._waiting_partials += not is_final
        self.queued_audio_bytes += audio.nbytes
        self._scheduler.promote(self)

    def drop_queued_partials(self) -> int:
        """Resolve the queued (not running) partials with None; returns how many."""
        stale = [r for r in self._waiting if not r.is_final]
        for request in stale:
            self._discard(request)
        if stale:
            self._scheduler.count_dropped(len(stale))
            for request in stale:
                self._on_done(request.payload, None, None)
        return len(stale)

    def _supersede_running_partial(self) -> None:
        """The partial running now would only be replaced by the final coming in: it is reported
        dropped at once and the stream is free for the final, which takes another slot if one is idle
        instead of waiting for it (the partial finishes in its thread, unheard)."""
        running = self._running
        if running is None or running.is_final:
            return
        running.superseded = True
        self._running = None
        self.queued_audio_bytes -= running.audio.nbytes
        self._scheduler.count_dropped(1)
        self._on_done(running.payload, None, None)

    def close(self) -> None:
        """The stream has ended: forget what is queued (a running decode finishes in its thread and
        its outcome is ignored)."""
        self._closed = True
        for request in list(self._waiting):
            self._discard(request)

    # --- used by the scheduler ------------------------------------------------------------------

    def _head(self) -> DecodeRequest[P] | None:
        if self._closed or self._running is not None or not self._waiting:
            return None
        return self._waiting[0]

    def _discard(self, request: DecodeRequest[P]) -> None:
        if request is self._waiting[0] and self._eligible:
            self._scheduler.ineligible(request)
            self._eligible = False
        self._waiting.remove(request)
        self._waiting_partials -= not request.is_final
        self.queued_audio_bytes -= request.audio.nbytes

    def _start(self, request: DecodeRequest[P]) -> None:
        self._waiting.popleft()
        self._waiting_partials -= not request.is_final
        self._eligible = False
        self._running = request

    def _finish(self, request: DecodeRequest[P], transcript: Transcript | None, error: ApplianceError | None) -> None:
        if request.superseded:
            return
        if request is self._running:
            self._running = None
            self.queued_audio_bytes -= request.audio.nbytes
        if self._closed:
            return
        self._on_done(request.payload, transcript, error)
        self._scheduler.promote(self)

    def _options_for(self, request: DecodeRequest[P]) -> DecodeOptions:
        if request.options is None:
            if self._prepare is None:
                raise RuntimeError("a request without options needs a queue with `prepare`")
            request.options = self._prepare(request.payload)
        return request.options
