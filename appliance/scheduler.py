"""Decode scheduling: shared, fair and bounded access to the model pool.

Each stream submits decodes to its own FIFO queue. A dispatcher hands free model slots
(`max_in_flight`, one per model instance) to streams in round-robin order (least recently served
first), streams whose next request is a final first, so one busy stream cannot starve another and finals never wait behind
speculative partials. Under pressure (a final already waiting, or `max_pending_global` requests
queued) a new partial is dropped and counted instead of queued. A final that is not dispatched
within `queue_timeout_sec` fails with ERR1009. With a batch window, the dispatcher waits up to
`batch_window_ms` to gather up to `max_batch_size` compatible requests into one backend call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, Transcript

log = logging.getLogger(__name__)


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


@dataclass
class _Request:
    stream_id: str
    is_final: bool
    backend: Backend
    audio: np.ndarray
    options: DecodeOptions
    language: str | None
    task: str
    enqueued_at: float
    sequence: int = 0
    dispatched: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def batch_key(self) -> tuple:
        return (id(self.backend), self.options, self.language, self.task, self.is_final)


class DecodeScheduler:
    def __init__(self, max_in_flight: int, *, max_pending_global: int = 512, queue_timeout_sec: float = 1.0,
                 batch_window_ms: float = 0.0, max_batch_size: int = 1, log_metrics: bool = False,
                 observer: DecodeObserver | None = None):
        self._observer = observer or DecodeObserver()
        self.max_in_flight = max(1, max_in_flight)
        self.max_pending_global = max(1, max_pending_global)
        self.queue_timeout_sec = queue_timeout_sec
        self.batch_window_sec = batch_window_ms / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        self._log_metrics = log_metrics
        self._executor = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="decode")
        self._queues: dict[str, deque[_Request]] = {}
        self._last_served: dict[str, int] = {}  # turn number, for streams with a backlog
        self._turn = 0
        self._sequence = 0
        self._pending = 0
        self._pending_finals = 0
        self._in_flight = 0
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None
        self.stats = SchedulerStats()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def under_pressure(self) -> bool:
        """True when a new partial would only delay finals."""
        return self._pending_finals > 0 or self._pending >= self.max_pending_global

    async def decode(self, backend: Backend, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                     task: str, is_final: bool, stream_id: str = "") -> Transcript | None:
        """Decode `audio`; None when a partial was dropped. ERR1009 / ERR1016 on failure."""
        if not is_final and self.under_pressure():
            self.stats.partials_dropped += 1
            self._observer.partials_dropped(1)
            return None
        if is_final and self._pending >= self.max_pending_global:
            self._observer.decode_failed(is_final=True, outcome="timeout")
            raise ApplianceError("ERR1009", f"{self._pending} decodes are queued "
                                 f"(server.max_pending_decodes_global); retry shortly", retry_after_sec=1.0)
        request = _Request(stream_id, is_final, backend, audio, options, language, task, time.monotonic())
        self._enqueue(request)
        try:
            if is_final and self.queue_timeout_sec > 0:
                try:
                    await asyncio.wait_for(asyncio.shield(request.dispatched), timeout=self.queue_timeout_sec)
                except asyncio.TimeoutError:
                    if not request.dispatched.done():
                        self._remove(request)
                        self.stats.finals_timed_out += 1
                        self._observer.decode_failed(is_final=True, outcome="timeout")
                        raise ApplianceError(
                            "ERR1009", f"no decode slot within {self.queue_timeout_sec:g} s "
                            "(server.decode_queue_timeout_sec); the server is overloaded",
                            retry_after_sec=1.0) from None
            return await asyncio.shield(request.result)
        except asyncio.CancelledError:
            # The stream went away: a queued request must not take a slot later (a running one
            # finishes in its thread; its result is dropped).
            self._remove(request)
            raise

    def drop_queued_partials(self, stream_id: str, finals_too: bool = False) -> int:
        """Resolve a stream's queued (not running) partials with None: its final supersedes them.
        With `finals_too` (the stream has ended), its queued finals go as well."""
        queue = self._queues.get(stream_id)
        if not queue:
            return 0
        stale = [r for r in queue if finals_too or not r.is_final]
        for request in stale:
            self._remove(request)
            request.result.set_result(None)
        self.stats.partials_dropped += len(stale)
        if stale:
            self._observer.partials_dropped(len(stale))
        return len(stale)

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- queues -------------------------------------------------------------------------------

    def _enqueue(self, request: _Request) -> None:
        self._sequence += 1
        request.sequence = self._sequence
        self._queues.setdefault(request.stream_id, deque()).append(request)
        self._pending += 1
        self._pending_finals += request.is_final
        if self._dispatcher is None or self._dispatcher.done():
            self._wakeup = asyncio.Event()
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())
        self._wakeup.set()

    def _remove(self, request: _Request) -> None:
        queue = self._queues.get(request.stream_id)
        if queue is None or request not in queue:
            return
        queue.remove(request)
        self._pending -= 1
        self._pending_finals -= request.is_final
        if not queue:
            del self._queues[request.stream_id]
            self._last_served.pop(request.stream_id, None)

    def _pop_next(self) -> _Request | None:
        """Finals first; among those, the stream served least recently (round-robin), then the oldest.

        A stream with a backlog keeps its turn count while it has queued work, so a newcomer (or a
        stream with one request at a time) goes ahead of the backlog's next item.
        """
        if not self._queues:
            return None
        chosen = min(self._queues, key=lambda sid: (not self._queues[sid][0].is_final,
                                                    self._last_served.get(sid, 0), self._queues[sid][0].sequence))
        request = self._queues[chosen][0]
        self._remove(request)
        self._turn += 1
        if chosen in self._queues:
            self._last_served[chosen] = self._turn
        return request

    def _pop_compatible(self, key: tuple, limit: int) -> list[_Request]:
        taken = []
        for sid in list(self._queues):
            if len(taken) >= limit:
                break
            head = self._queues[sid][0]
            if head.batch_key() == key:
                self._remove(head)
                taken.append(head)
        return taken

    # --- dispatch -----------------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._in_flight < self.max_in_flight and self._pending:
                first = self._pop_next()
                batch = [first]
                if self.max_batch_size > 1 and hasattr(first.backend, "transcribe_batch"):
                    if self.batch_window_sec > 0 and self._pending < self.max_batch_size - 1:
                        await asyncio.sleep(self.batch_window_sec)
                    batch += self._pop_compatible(first.batch_key(), self.max_batch_size - 1)
                for request in batch:
                    if not request.dispatched.done():
                        request.dispatched.set_result(None)
                self._in_flight += 1
                asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        first = batch[0]
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                transcripts = [await loop.run_in_executor(self._executor, lambda: first.backend.transcribe(
                    first.audio, first.options, language=first.language, task=first.task,
                    provisional=not first.is_final))]
            else:
                transcripts = await loop.run_in_executor(self._executor, lambda: first.backend.transcribe_batch(
                    [r.audio for r in batch], first.options, language=first.language, task=first.task,
                    provisional=not first.is_final))
        except Exception as err:  # third-party code: any failure maps to one code
            self.stats.failures += len(batch)
            for request in batch:
                self._observer.decode_failed(is_final=request.is_final, outcome="failure")
            log.exception("decode failed in %s", first.backend.model_id)
            failure = ApplianceError("ERR1016", f"decode failed in {first.backend.model_id}: {type(err).__name__}")
            for request in batch:
                if not request.result.done():
                    request.result.set_exception(failure)
        else:
            self._account(batch, transcripts, time.perf_counter() - started)
            for request, transcript in zip(batch, transcripts):
                if not request.result.done():
                    request.result.set_result(transcript)
        finally:
            self._in_flight -= 1
            self._wakeup.set()

    def _account(self, batch: list[_Request], transcripts: list[Transcript], elapsed_sec: float) -> None:
        self.stats.batches += 1
        self.stats.decodes += len(batch)
        self.stats.decode_sec_total += elapsed_sec
        audio_sec = sum(t.audio_sec for t in transcripts)
        self.stats.audio_sec_total += audio_sec
        now = time.monotonic()
        for request, transcript in zip(batch, transcripts):
            self._observer.decode_done(is_final=request.is_final, decode_sec=elapsed_sec, audio_sec=transcript.audio_sec,
                                       wait_sec=now - request.enqueued_at - elapsed_sec)
        if self._log_metrics:  # figures only: transcript text never goes to the main log
            waited_sec = max(time.monotonic() - r.enqueued_at for r in batch) - elapsed_sec
            redone = [t.extra["window_fallback"] for t in transcripts if "window_fallback" in t.extra]
            log.info("decode batch of %d (%d final, redone on a larger window: %s): %.2f s audio in %.3f s "
                     "after %.3f s queued, rtf %.3f", len(batch), sum(r.is_final for r in batch),
                     ", ".join(redone) or "none",
                     audio_sec, elapsed_sec, max(0.0, waited_sec), elapsed_sec / max(audio_sec, 1e-6))
