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

The parts, one job each: `stream_queue` (a stream's decodes in order), `eligible` (the heads
waiting for a slot, their order and deadlines), `runner` (one backend call and its outcomes),
`observer` (stats and the outcome observer), `decode_scheduler` (`DecodeScheduler`, which ties
them together: eligibility, pressure, dispatch).
"""

from appliance.scheduler.decode_scheduler import DecodeScheduler
from appliance.scheduler.observer import DecodeObserver, SchedulerStats
from appliance.scheduler.stream_queue import DecodeRequest, StreamQueue

__all__ = ["DecodeObserver", "DecodeRequest", "DecodeScheduler", "SchedulerStats", "StreamQueue"]
