"""Running one batch of decodes on its backend, in the decode threads, and judging the outcome.

A backend failure becomes ERR1016 for every request of the batch; a decode with client-chosen options
that ran past `max_decode_sec` becomes ERR1009 for its stream. Successful decodes are counted in the
stats and reported to the observer; failures of a client's own options are reported as "client",
never against the server's health.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from appliance.errors import ApplianceError, decode_timeout
from appliance.models.backends import Transcript
from appliance.observability.log_guard import ThrottledLog
from appliance.scheduler.observer import DecodeObserver, SchedulerStats
from appliance.scheduler.stream_queue import DecodeRequest

log = logging.getLogger("appliance.scheduler")  # the name operators filter on, from before the split
client_failures = ThrottledLog(log)  # a session's own options failing: a few lines a minute, no traceback

Outcome = tuple[Transcript | None, ApplianceError | None]


class DecodeRunner:
    def __init__(self, threads: int, stats: SchedulerStats, observer: DecodeObserver, *, max_decode_sec: float,
                 log_metrics: bool):
        self.max_decode_sec = max_decode_sec  # 0: no budget
        self._stats = stats
        self._observer = observer
        self._log_metrics = log_metrics
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, batch: list[DecodeRequest], *, second_look: bool = False) -> list[Outcome]:
        """One outcome per request of `batch` (compatible requests: one backend, options, language, task).
        `second_look`: unsure finals may be decoded again (Backend.transcribe), the box has room."""
        loop = asyncio.get_running_loop()
        first = batch[0]
        backend, options = first.queue.backend, first.queue._options_for(first)
        language, task, provisional = first.queue.language, first.queue.task, not first.is_final
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                transcripts = [await loop.run_in_executor(self._executor, lambda: backend.transcribe(
                    first.audio, options, language=language, task=task, provisional=provisional,
                    second_look=second_look))]
            else:
                transcripts = await loop.run_in_executor(self._executor, lambda: backend.transcribe_batch(
                    [r.audio for r in batch], options, language=language, task=task, provisional=provisional,
                    second_look=second_look))
        except Exception as err:  # third-party code: any failure maps to one code
            self._stats.failures += len(batch)
            for request in batch:
                self._observer.decode_failed(is_final=request.is_final, outcome=_failure_kind(request, "failure"))
            if all(r.queue.client_tuned for r in batch):
                client_failures.info(type(err).__name__, "decode with client-chosen options failed in %s: %s",
                                     backend.model_id, type(err).__name__)
            else:
                log.exception("decode failed in %s", backend.model_id)
            failure = ApplianceError("ERR1016", f"decode failed in {backend.model_id}: {type(err).__name__}")
            return [(None, failure)] * len(batch)
        elapsed_sec = time.perf_counter() - started
        outcomes = [self._within_budget(request, transcript, elapsed_sec)
                    for request, transcript in zip(batch, transcripts, strict=True)]
        self._account(batch, transcripts, elapsed_sec, [error is None for _, error in outcomes])
        return outcomes

    def _within_budget(self, request: DecodeRequest, transcript: Transcript, elapsed_sec: float
                       ) -> Outcome:
        """A decode with client-chosen options that ran past max_decode_sec is cut: its stream gets
        ERR1009 instead of the result, so a session cannot keep the model busy with costly options."""
        if not (request.queue.client_tuned and 0 < self.max_decode_sec < elapsed_sec):
            return transcript, None
        self._observer.decode_failed(is_final=request.is_final, outcome="client")
        return None, decode_timeout(
            f"one decode took {elapsed_sec:.1f} s with this session's decode options, over "
            f"server.max_decode_sec={self.max_decode_sec:g}: lower decode.beam_size, decode.best_of or the "
            "temperature ladder")

    def _account(self, batch: list[DecodeRequest], transcripts: list[Transcript], elapsed_sec: float,
                 delivered: list[bool]) -> None:
        self._stats.batches += 1
        self._stats.decodes += len(batch)
        self._stats.decode_sec_total += elapsed_sec
        audio_sec = sum(t.audio_sec for t in transcripts)
        self._stats.audio_sec_total += audio_sec
        now = time.monotonic()
        for request, transcript, ok in zip(batch, transcripts, delivered, strict=True):
            if not ok:
                continue  # reported as a failure by _within_budget
            self._observer.decode_done(is_final=request.is_final, decode_sec=elapsed_sec,
                                       audio_sec=transcript.audio_sec, wait_sec=now - request.enqueued_at - elapsed_sec)
        if self._log_metrics:
            _log_batch(batch, transcripts, elapsed_sec, audio_sec, now)


def _failure_kind(request: DecodeRequest, kind: str) -> str:
    """"client" for a stream whose client chose its decode options: not the server's health."""
    return "client" if request.queue.client_tuned else kind


def _log_batch(batch: list[DecodeRequest], transcripts: list[Transcript], elapsed_sec: float, audio_sec: float,
               now: float) -> None:
    """One line of figures per backend call (server.log_metrics); transcript text never goes to the log."""
    waited_sec = max(now - r.enqueued_at for r in batch) - elapsed_sec
    redone = [t.extra["window_fallback"] for t in transcripts if "window_fallback" in t.extra]
    windows = sorted({t.extra["encode_frames"] // 100 for t in transcripts if "encode_frames" in t.extra})
    log.info("decode batch of %d (%d final, %d speculative, %s s window, redone on a larger window: %s): "
             "%.2f s audio in %.3f s after %.3f s queued, rtf %.3f", len(batch), sum(r.is_final for r in batch),
             sum(r.speculative for r in batch), "/".join(map(str, windows)) or "?", ", ".join(redone) or "none",
             audio_sec, elapsed_sec, max(0.0, waited_sec), elapsed_sec / max(audio_sec, 1e-6))
