"""Decode scheduling: shared, fair and bounded access to the model pool.

Each stream owns one `StreamQueue`: the only record of its decodes and their order. A stream runs
one decode at a time, in FIFO order, so its results leave in the order its audio arrived and every
partial of an utterance precedes its final. A final supersedes its stream's queued partials and the
one running: those are reported dropped when the final is submitted, and the final does not wait for
the running one to finish. A queue's head becomes *eligible* once the stream's previous decode is
done; the dispatcher hands free model slots (`max_in_flight`, one per model instance) to eligible
heads, finals first, then in the order they became eligible (a stream that was just served goes
behind the others: round-robin). Under pressure (an eligible final waiting, or `max_pending_global`
eligible heads) a partial is dropped and counted instead of queued. A final not dispatched within
`queue_timeout_sec` of becoming eligible fails with ERR1009. With a batch window, the dispatcher
waits up to `batch_window_ms` to gather up to `max_batch_size` compatible heads into one
`Backend.transcribe_batch` call. `demand()` is the recent load of the slots (running plus eligible
decodes per slot, averaged over ~2 s): the partial cadence stretches as it rises.

Every outcome goes back through the queue's `on_done(payload, transcript, error)`, called on the
event loop: a transcript, `None` for a dropped partial, or an `ApplianceError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from appliance.decode_demand import DemandMeter
from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError, decode_timeout
from appliance.models.backends import Backend, Transcript
from appliance.observability.log_guard import ThrottledLog

log = logging.getLogger(__name__)
client_failures = ThrottledLog(log)  # a session's own options failing: a few lines a minute, no traceback

P = TypeVar("P")


@dataclass
class SchedulerStats:
    decodes: int = 0
    batches: int = 0
    partials_dropped: int = 0
    finals_timed_out: int = 0
    failures: int = 0
    decode_sec_total: float = 0.0
    audio_sec_total: float = 0.0


class DecodeObserver:
    """Receives every decode outcome (metrics, health). Called on the event loop; must be quick.
    This base class ignores everything."""

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None: ...

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        """`outcome`: "timeout" (ERR1009: no slot in time, or the queue was full) or "failure" (ERR1016)."""

    def partials_dropped(self, count: int) -> None: ...


@dataclass(eq=False)
class _Request(Generic[P]):
    queue: StreamQueue[P]
    audio: np.ndarray
    is_final: bool
    payload: P
    options: DecodeOptions | None  # None: asked of the queue's `prepare` when the request becomes eligible
    enqueued_at: float = field(default_factory=time.monotonic)
    sequence: int = 0  # order of becoming eligible
    deadline: asyncio.TimerHandle | None = None
    superseded: bool = False  # a partial whose final came while it ran: already reported dropped

    def batch_key(self) -> tuple:
        q = self.queue
        return (id(q.backend), self.options, q.language, q.task, self.is_final)


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
        self._waiting: deque[_Request[P]] = deque()  # the head is eligible when nothing is running
        self._waiting_partials = 0  # read for every frame of a stream with partials: kept, not counted
        self._running: _Request[P] | None = None
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

    def submit(self, audio: np.ndarray, *, is_final: bool, payload: P, options: DecodeOptions | None = None) -> None:
        """Queue a decode; its outcome comes back through `on_done`. A partial that finds the queue
        at `max_pending` is dropped at once. A final first drops this stream's queued partials and
        the partial it is running: it supersedes them."""
        if self._closed:
            raise RuntimeError(f"stream {self.stream_id}: decode submitted after close")
        if is_final:
            self.drop_queued_partials()
            self._supersede_running_partial()
        elif self._max_pending and self.pending >= self._max_pending:
            self._scheduler.count_dropped(1)
            self._on_done(payload, None, None)
            return
        self._waiting.append(_Request(self, audio, is_final, payload, options))
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

    def _head(self) -> _Request[P] | None:
        if self._closed or self._running is not None or not self._waiting:
            return None
        return self._waiting[0]

    def _discard(self, request: _Request[P]) -> None:
        if request is self._waiting[0] and self._eligible:
            self._scheduler.ineligible(request)
            self._eligible = False
        self._waiting.remove(request)
        self._waiting_partials -= not request.is_final
        self.queued_audio_bytes -= request.audio.nbytes

    def _start(self, request: _Request[P]) -> None:
        self._waiting.popleft()
        self._waiting_partials -= not request.is_final
        self._eligible = False
        self._running = request

    def _finish(self, request: _Request[P], transcript: Transcript | None, error: ApplianceError | None) -> None:
        if request.superseded:
            return
        if request is self._running:
            self._running = None
            self.queued_audio_bytes -= request.audio.nbytes
        if self._closed:
            return
        self._on_done(request.payload, transcript, error)
        self._scheduler.promote(self)

    def _options_for(self, request: _Request[P]) -> DecodeOptions:
        if request.options is None:
            if self._prepare is None:
                raise RuntimeError("a request without options needs a queue with `prepare`")
            request.options = self._prepare(request.payload)
        return request.options


def _resolve(outcome: asyncio.Future, transcript: Transcript | None, error: ApplianceError | None) -> None:
    if not outcome.done():
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(transcript)


class DecodeScheduler:
    def __init__(self, max_in_flight: int, *, max_pending_global: int = 512, queue_timeout_sec: float = 1.0,
                 batch_window_ms: float = 0.0, max_batch_size: int = 1, log_metrics: bool = False,
                 observer: DecodeObserver | None = None, max_decode_sec: float = 0.0):
        self._observer = observer or DecodeObserver()
        self.max_decode_sec = max_decode_sec  # 0: no budget
        self.max_in_flight = max(1, max_in_flight)
        self.max_pending_global = max(1, max_pending_global)
        self.queue_timeout_sec = queue_timeout_sec
        self.batch_window_sec = batch_window_ms / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self._log_metrics = log_metrics
        self._executor = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="decode")
        self._eligible: dict[_Request, None] = {}  # eligible heads, insertion-ordered
        self._sequence = 0
        self._pending_finals = 0
        self._in_flight = 0
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None
        self._adhoc: dict[str, StreamQueue[asyncio.Future]] = {}  # decode()'s queues
        self._demand = DemandMeter()
        self.stats = SchedulerStats()

    @property
    def pending(self) -> int:
        """Eligible decodes waiting for a model slot."""
        return len(self._eligible)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def demand(self) -> float:
        """Recent decode demand: (decodes running + eligible ones waiting) / slots, averaged over a
        few seconds. Below 1 the slots have idle time; partial cadence follows it."""
        return self._demand.value()

    def _demand_changed(self) -> None:
        self._demand.set_level((self._in_flight + len(self._eligible)) / self.max_in_flight)

    def under_pressure(self) -> bool:
        """True when a new partial would only delay finals."""
        return self._pending_finals > 0 or len(self._eligible) >= self.max_pending_global

    def open_stream(self, stream_id: str, backend: Backend, *, language: str | None, task: str,
                    on_done: Callable[[P, Transcript | None, ApplianceError | None], None],
                    prepare: Callable[[P], DecodeOptions] | None = None, max_pending: int = 0,
                    client_tuned: bool = False) -> StreamQueue[P]:
        return StreamQueue(self, stream_id, backend, language=language, task=task, on_done=on_done,
                           prepare=prepare, max_pending=max_pending, client_tuned=client_tuned)

    async def decode(self, backend: Backend, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                     task: str, is_final: bool, stream_id: str = "") -> Transcript | None:
        """One decode, awaited, on the queue of `stream_id` (kept while it has work): None when a
        partial was dropped; ERR1009 / ERR1016 raised. For callers without a stream of their own."""
        queue = self._adhoc.get(stream_id)
        if queue is None or queue.backend is not backend:
            queue = self._adhoc[stream_id] = self.open_stream(stream_id, backend, language=language, task=task,
                                                              on_done=_resolve)
        outcome: asyncio.Future[Transcript | None] = asyncio.get_running_loop().create_future()
        queue.submit(audio, is_final=is_final, payload=outcome, options=options)
        try:
            return await outcome
        finally:
            if not queue.pending and self._adhoc.get(stream_id) is queue:
                del self._adhoc[stream_id]

    def count_dropped(self, count: int) -> None:
        self.stats.partials_dropped += count
        self._observer.partials_dropped(count)

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- eligibility ------------------------------------------------------------------------------

    def promote(self, queue: StreamQueue) -> None:
        """Make the queue's head eligible, if the stream is idle; drop or fail it at once where the
        load says so (a partial under pressure, a final with the global queue full)."""
        while (head := queue._head()) is not None and not queue._eligible:
            if not head.is_final and self.under_pressure():
                queue._discard(head)
                self.count_dropped(1)
                queue._on_done(head.payload, None, None)
                continue
            if head.is_final and len(self._eligible) >= self.max_pending_global:
                queue._discard(head)
                self._observer.decode_failed(is_final=True, outcome="timeout")
                queue._on_done(head.payload, None, ApplianceError(
                    "ERR1009", f"{len(self._eligible)} decodes are queued (server.max_pending_decodes_global); "
                    "retry shortly", retry_after_sec=1.0))
                continue
            queue._options_for(head)
            self._sequence += 1
            head.sequence = self._sequence
            queue._eligible = True
            self._eligible[head] = None
            self._demand_changed()
            self._pending_finals += head.is_final
            if head.is_final and self.queue_timeout_sec > 0:
                head.deadline = asyncio.get_running_loop().call_later(self.queue_timeout_sec, self._expire, head)
            self._wake()

    def ineligible(self, request: _Request) -> None:
        """Take an eligible head out of the running (dispatched, dropped or expired)."""
        if request in self._eligible:
            del self._eligible[request]
            self._demand_changed()
            self._pending_finals -= request.is_final
        if request.deadline is not None:
            request.deadline.cancel()
            request.deadline = None

    def _expire(self, request: _Request) -> None:
        queue = request.queue
        if request not in self._eligible:
            return
        queue._discard(request)
        self.stats.finals_timed_out += 1
        self._observer.decode_failed(is_final=True, outcome="timeout")
        queue._finish(request, None, ApplianceError(
            "ERR1009", f"no decode slot within {self.queue_timeout_sec:g} s (server.decode_queue_timeout_sec); "
            "the server is overloaded", retry_after_sec=1.0))

    # --- dispatch -----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._wakeup = asyncio.Event()
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())
        assert self._wakeup is not None
        self._wakeup.set()

    def _take(self, request: _Request) -> None:
        self.ineligible(request)
        request.queue._start(request)

    def _pop_next(self) -> _Request | None:
        """Finals first; among those, the one eligible longest (round-robin across streams)."""
        if not self._eligible:
            return None
        request = min(self._eligible, key=lambda r: (not r.is_final, r.sequence))
        self._take(request)
        return request

    def _pop_compatible(self, key: tuple, limit: int) -> list[_Request]:
        taken = [r for r in self._eligible if r.batch_key() == key][:limit]
        for request in taken:
            self._take(request)
        return taken

    async def _dispatch_forever(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._in_flight < self.max_in_flight and self._eligible:
                first = self._pop_next()
                if first is None:
                    break
                batch = [first]
                batch_limit = min(self.max_batch_size, first.queue.backend.max_batch_size)
                if batch_limit > 1:
                    if self.batch_window_sec > 0 and len(self._eligible) < batch_limit - 1:
                        await asyncio.sleep(self.batch_window_sec)
                    batch += self._pop_compatible(first.batch_key(), batch_limit - 1)
                self._in_flight += 1
                self._demand_changed()
                asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        first = batch[0]
        backend, options = first.queue.backend, first.queue._options_for(first)
        language, task, provisional = first.queue.language, first.queue.task, not first.is_final
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                transcripts = [await loop.run_in_executor(self._executor, lambda: backend.transcribe(
                    first.audio, options, language=language, task=task, provisional=provisional))]
            else:
                transcripts = await loop.run_in_executor(self._executor, lambda: backend.transcribe_batch(
                    [r.audio for r in batch], options, language=language, task=task, provisional=provisional))
        except Exception as err:  # third-party code: any failure maps to one code
            self.stats.failures += len(batch)
            for request in batch:
                self._observer.decode_failed(is_final=request.is_final, outcome=_failure_kind(request, "failure"))
            if all(r.queue.client_tuned for r in batch):
                client_failures.info(type(err).__name__, "decode with client-chosen options failed in %s: %s",
                                     backend.model_id, type(err).__name__)
            else:
                log.exception("decode failed in %s", backend.model_id)
            failure = ApplianceError("ERR1016", f"decode failed in {backend.model_id}: {type(err).__name__}")
            outcomes: list[tuple[Transcript | None, ApplianceError | None]] = [(None, failure)] * len(batch)
        else:
            elapsed_sec = time.perf_counter() - started
            outcomes = [self._within_budget(request, transcript, elapsed_sec)
                        for request, transcript in zip(batch, transcripts, strict=True)]
            self._account(batch, transcripts, elapsed_sec, [error is None for _, error in outcomes])
        finally:
            self._in_flight -= 1
            self._demand_changed()
            self._wake()
        for request, (transcript, error) in zip(batch, outcomes, strict=True):
            request.queue._finish(request, transcript, error)

    def _within_budget(self, request: _Request, transcript: Transcript, elapsed_sec: float
                       ) -> tuple[Transcript | None, ApplianceError | None]:
        """A decode with client-chosen options that ran past max_decode_sec is cut: its stream gets
        ERR1009 instead of the result, so a session cannot keep the model busy with costly options."""
        if not (request.queue.client_tuned and 0 < self.max_decode_sec < elapsed_sec):
            return transcript, None
        self._observer.decode_failed(is_final=request.is_final, outcome="client")
        return None, decode_timeout(
            f"one decode took {elapsed_sec:.1f} s with this session's decode options, over "
            f"server.max_decode_sec={self.max_decode_sec:g}: lower decode.beam_size, decode.best_of or the "
            "temperature ladder")

    def _account(self, batch: list[_Request], transcripts: list[Transcript], elapsed_sec: float,
                 delivered: list[bool]) -> None:
        self.stats.batches += 1
        self.stats.decodes += len(batch)
        self.stats.decode_sec_total += elapsed_sec
        audio_sec = sum(t.audio_sec for t in transcripts)
        self.stats.audio_sec_total += audio_sec
        now = time.monotonic()
        for request, transcript, ok in zip(batch, transcripts, delivered, strict=True):
            if not ok:
                continue  # reported as a failure by _within_budget
            self._observer.decode_done(is_final=request.is_final, decode_sec=elapsed_sec,
                                       audio_sec=transcript.audio_sec, wait_sec=now - request.enqueued_at - elapsed_sec)
        if self._log_metrics:
            _log_batch(batch, transcripts, elapsed_sec, audio_sec, now)


def _failure_kind(request: _Request, kind: str) -> str:
    """"client" for a stream whose client chose its decode options: not the server's health."""
    return "client" if request.queue.client_tuned else kind


def _log_batch(batch: list[_Request], transcripts: list[Transcript], elapsed_sec: float, audio_sec: float,
               now: float) -> None:
    """One line of figures per backend call (server.log_metrics); transcript text never goes to the log."""
    waited_sec = max(now - r.enqueued_at for r in batch) - elapsed_sec
    redone = [t.extra["window_fallback"] for t in transcripts if "window_fallback" in t.extra]
    log.info("decode batch of %d (%d final, redone on a larger window: %s): %.2f s audio in %.3f s "
             "after %.3f s queued, rtf %.3f", len(batch), sum(r.is_final for r in batch), ", ".join(redone) or "none",
             audio_sec, elapsed_sec, max(0.0, waited_sec), elapsed_sec / max(audio_sec, 1e-6))
