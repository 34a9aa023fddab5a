"""`DecodeScheduler`: the one owner of decode order, fairness, pressure and the model slots.

It makes a stream's head eligible when the stream is idle (or drops a partial, or fails a final, at
once where the load says so), hands free slots to eligible heads in `EligibleHeads` order, gathers
compatible heads into one batch, and gives each outcome from `DecodeRunner` back to its queue.

Finals never wait behind partials. While finals are due soon (one was submitted, or a stream's
speech paused: its speculative partial came, within the last FINALS_SOON_SEC) ordinary partials may
hold at most `max_in_flight - final_reserved_slots` slots: the rest is kept for finals (and the
speculative partials that may become them). With no final in sight partials use every slot, so a
kiosk's first words come as fast as the box allows. When several compatible heads wait, they are
spread over the free slots in even batches (up to `max_batch_size`): 10 finals on 2 slots go as
5 + 5, not 8 + 2 (bench/batch_curve.py: a batch's time grows with its size, so the even split ends
first).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from appliance.decode_demand import DemandMeter
from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, Transcript
from appliance.scheduler.eligible import EligibleHeads
from appliance.scheduler.observer import DecodeObserver, SchedulerStats
from appliance.scheduler.runner import DecodeRunner
from appliance.scheduler.stream_queue import DecodeRequest, StreamQueue

P = TypeVar("P")

# How long after a final (or a stream's speculative partial: its speech paused) more finals are
# expected: about an utterance's endpoint delay plus one decode. Partials give way for that long.
FINALS_SOON_SEC = 2.0
# `server.speculative_finals: auto`: a finals-only stream's speculative decode is welcome while the slots
# kept for finals stay free beside it, none waits, and recent demand (`demand()`) is below this: the slots
# were idle about half of the last seconds, so a decode that may be thrown away seldom holds a slot that a
# burst of finals needs.
SPECULATE_BELOW_DEMAND = 0.5


def _resolve(outcome: asyncio.Future, transcript: Transcript | None, error: ApplianceError | None) -> None:
    if not outcome.done():
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(transcript)


class DecodeScheduler:
    def __init__(self, max_in_flight: int, *, max_pending_global: int = 512, queue_timeout_sec: float = 1.0,
                 batch_window_ms: float = 0.0, max_batch_size: int = 1, log_metrics: bool = False,
                 observer: DecodeObserver | None = None, max_decode_sec: float = 0.0,
                 final_reserved_slots: int = 1, finals_soon_sec: float = FINALS_SOON_SEC):
        self._observer = observer or DecodeObserver()
        self.max_in_flight = max(1, max_in_flight)
        self.max_pending_global = max(1, max_pending_global)
        self.queue_timeout_sec = queue_timeout_sec
        self.batch_window_sec = batch_window_ms / 1000.0
        self.max_batch_size = max(1, max_batch_size)
        # never every slot: one model instance still serves partials
        self.final_reserved_slots = max(0, min(final_reserved_slots, self.max_in_flight - 1))
        self.stats = SchedulerStats()
        self._runner = DecodeRunner(self.max_in_flight, self.stats, self._observer, max_decode_sec=max_decode_sec,
                                    log_metrics=log_metrics)
        self._eligible = EligibleHeads()
        self._in_flight = 0
        self._partials_running = 0  # batches of ordinary partials in flight
        self._finals_soon_sec = finals_soon_sec
        self._finals_soon_until = 0.0  # monotonic time until which finals are expected
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None
        self._adhoc: dict[str, StreamQueue[asyncio.Future]] = {}  # decode()'s queues
        self._demand = DemandMeter()

    @property
    def max_decode_sec(self) -> float:
        """A decode with client-chosen options may take this long (0: no budget)."""
        return self._runner.max_decode_sec

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

    def room_to_speculate(self) -> bool:
        """Whether a decode that may be thrown away (a finals-only stream's speculation) would use
        capacity nothing else wants now: no decode waits, a slot is idle beside the ones kept for
        finals (`final_reserved_slots`), which it leaves free, and the slots have been idle much of
        the time of late. Read per stream as its pause begins, so when many pause at once only the
        first (one per slot beyond the kept ones) speculates."""
        busy = self._in_flight + len(self._eligible) + self.final_reserved_slots
        return busy < self.max_in_flight and self._demand.value() < SPECULATE_BELOW_DEMAND

    def room_for_second_look(self) -> bool:
        """Whether a final batch about to run may also decode its unsure finals again on the full
        window (window_check.SECOND_LOOK_BELOW; 2-3x the encoder time of a final): nothing waits for
        a slot, and a slot stays free beside it for what comes next (one-slot boxes: nothing waits).
        Under load finals keep their one look, so a noisy hall costs accuracy, never finals."""
        return not self._eligible and (self._in_flight < self.max_in_flight or self.max_in_flight == 1)

    def final_expected(self) -> None:
        """A final is due soon (a stream's speech paused): partials leave the reserved slots to it."""
        self._finals_soon_until = time.monotonic() + self._finals_soon_sec

    def partial_slots(self) -> int:
        """Slots ordinary partials may hold now: all of them, less the reserved ones while finals
        are due soon."""
        if self._eligible.finals or time.monotonic() < self._finals_soon_until:
            return self.max_in_flight - self.final_reserved_slots
        return self.max_in_flight

    def under_pressure(self) -> bool:
        """True when a new partial would only delay finals."""
        return self._eligible.finals > 0 or len(self._eligible) >= self.max_pending_global

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
        self._runner.shutdown()

    # --- eligibility ------------------------------------------------------------------------------

    def promote(self, queue: StreamQueue) -> None:
        """Make the queue's head eligible, if the stream is idle; drop or fail it at once where the
        load says so (a partial under pressure, a final with the global queue full)."""
        while (head := queue._head()) is not None and not queue._eligible:
            if head.ordinary_partial and self.under_pressure():
                queue._discard(head)
                self.count_dropped(1)
                queue._on_done(head.payload, None, None)
                continue
            if head.is_final:
                self.final_expected()
            if head.is_final and len(self._eligible) >= self.max_pending_global:
                queue._discard(head)
                self._observer.decode_failed(is_final=True, outcome="timeout")
                queue._on_done(head.payload, None, ApplianceError(
                    "ERR1009", f"{len(self._eligible)} decodes are queued (server.max_pending_decodes_global); "
                    "retry shortly", retry_after_sec=1.0))
                continue
            queue._options_for(head)
            queue._eligible = True
            self._eligible.add(head, self.queue_timeout_sec, self._expire)
            self._demand_changed()
            self._wake()

    def ineligible(self, request: DecodeRequest) -> None:
        """Take an eligible head out of the running (dispatched, dropped or expired)."""
        if self._eligible.remove(request):
            self._demand_changed()

    def _expire(self, request: DecodeRequest) -> None:
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

    def _take(self, request: DecodeRequest) -> None:
        self.ineligible(request)
        request.queue._start(request)

    async def _dispatch_forever(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._in_flight < self.max_in_flight and self._eligible:
                first = self._eligible.next()
                if first is None:
                    break
                free = self._free_slots(first)
                if free <= 0:
                    break  # only ordinary partials wait, and they hold all the slots they may
                key = first.batch_key()
                batch_limit = min(self.max_batch_size, first.queue.backend.max_batch_size)
                # spread what waits evenly over the free slots, not one full batch and a remnant
                size = min(batch_limit, math.ceil(self._eligible.count_compatible(key) / free))
                self._take(first)
                batch = [first]
                if batch_limit > 1:
                    if self.batch_window_sec > 0 and len(self._eligible) < batch_limit - 1:
                        await asyncio.sleep(self.batch_window_sec)
                        size = batch_limit
                    batch += self._take_compatible(key, size - 1)
                self._in_flight += 1
                partials = first.ordinary_partial
                self._partials_running += partials
                self._demand_changed()
                second_look = first.is_final and self.room_for_second_look()
                asyncio.get_running_loop().create_task(self._run(batch, partials, second_look))

    def _free_slots(self, first: DecodeRequest) -> int:
        """Slots `first` (and the heads it may be batched with) may take now."""
        free = self.max_in_flight - self._in_flight
        if first.ordinary_partial:
            free = min(free, self.partial_slots() - self._partials_running)
        return free

    def _take_compatible(self, key: tuple, limit: int) -> list[DecodeRequest]:
        taken = self._eligible.compatible(key, limit)
        for request in taken:
            self._take(request)
        return taken

    async def _run(self, batch: list[DecodeRequest], partials: bool, second_look: bool) -> None:
        try:
            outcomes = await self._runner.run(batch, second_look=second_look)
        finally:
            self._in_flight -= 1
            self._partials_running -= partials
            self._demand_changed()
            self._wake()
        for request, (transcript, error) in zip(batch, outcomes, strict=True):
            request.queue._finish(request, transcript, error)
