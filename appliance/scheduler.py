"""Decode scheduling: runs blocking backend calls off the event loop, bounded by the model pool.

At most `max_in_flight` decodes run at once (one per model instance); more wait in FIFO order.
Partials are best-effort: when every slot is busy and others are already waiting, a partial is
dropped rather than queued, so finals never wait behind speculative work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, Transcript

log = logging.getLogger(__name__)


@dataclass
class SchedulerStats:
    decodes: int = 0
    partials_dropped: int = 0
    failures: int = 0
    decode_sec_total: float = 0.0
    audio_sec_total: float = 0.0


class DecodeScheduler:
    def __init__(self, max_in_flight: int, log_metrics: bool = False):
        self.max_in_flight = max(1, max_in_flight)
        self._log_metrics = log_metrics
        self._executor = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="decode")
        self._submitted = 0  # running + waiting in the executor
        self.stats = SchedulerStats()

    async def decode(self, backend: Backend, audio: np.ndarray, options: DecodeOptions, *,
                     language: str | None, task: str, is_final: bool) -> Transcript | None:
        """Decode `audio`; None when a partial was dropped under pressure. ERR1016 on backend failure."""
        if not is_final and self._submitted >= self.max_in_flight:
            self.stats.partials_dropped += 1
            return None
        self._submitted += 1
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            transcript = await loop.run_in_executor(
                self._executor, lambda: backend.transcribe(audio, options, language=language, task=task)
            )
        except Exception as err:  # the backend is third-party code: any failure maps to one code
            self.stats.failures += 1
            raise ApplianceError("ERR1016", f"decode failed in {backend.model_id}: {type(err).__name__}: {err}") from err
        finally:
            self._submitted -= 1
        elapsed_sec = time.perf_counter() - started
        self.stats.decodes += 1
        self.stats.decode_sec_total += elapsed_sec
        self.stats.audio_sec_total += transcript.audio_sec
        if self._log_metrics:  # figures only: transcript text never goes to the main log
            log.info("decode %s: %.2f s audio in %.3f s (%.3f s queued+run), rtf %.3f",
                     "final" if is_final else "partial", transcript.audio_sec, transcript.decode_sec,
                     elapsed_sec, transcript.decode_sec / max(transcript.audio_sec, 1e-6))
        return transcript

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
