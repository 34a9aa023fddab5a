"""Whole-file transcription for request/response transports (the OpenAI-compatible HTTP API).

An upload is a stream like any other: it is admitted by `SessionService.create_session` (auth,
rate, caps, memory), tagged `upload_mode=batch` (the batch byte-rate budget and upload cap), and
its audio goes through `PushStream` into the same pipeline and scheduler as a gRPC or Wyoming
stream, so it competes fairly for decodes and shows up in the metrics and on the status page.

The HTTP plane runs on waitress's worker threads, the pipeline on the appliance's event loop:
`FileTranscriber.transcribe` is called on a worker thread, has the file decoded by a child process
(appliance.decoder_sandbox) and hands each block to the loop with `run_coroutine_threadsafe`. A
bounded number of uploads run at once; past it a request is refused at once (ERR1007, Retry-After)
rather than queued, so uploads can never hold every worker thread. An upload whose client hung up
(the HTTP server's `disconnected` check) is cancelled within `POLL_SEC`: its decode stops and its
slot is free for the next one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.decoder_sandbox import SandboxedUpload
from appliance.errors import ApplianceError
from appliance.frontdoor import DrainGate
from appliance.sessions import SessionService
from appliance.streaming.push import PushStream
from appliance.streaming.session import SessionRequest
from appliance.streaming.types import RecognitionResult
from appliance.streaming.word_timing import Word

T = TypeVar("T")
BUSY_RETRY_AFTER_SEC = 2.0
CANCEL_WAIT_SEC = 5.0
POLL_SEC = 0.25  # how often a waiting upload asks whether its client is still there
Disconnected = Callable[[], bool]


def _connected() -> bool:
    return False


@dataclass(frozen=True)
class Segment:
    start_sec: float
    end_sec: float
    text: str
    words: tuple[Word, ...] = ()  # when the request asked for word timings


@dataclass(frozen=True)
class Transcription:
    segments: list[Segment]
    language: str  # code ("en"); "" when the model reported none
    duration_sec: float  # audio decoded from the upload
    task: str  # transcribe or translate
    model_id: str

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


class FileTranscriber:
    def __init__(self, service: SessionService, loop: asyncio.AbstractEventLoop, *, max_concurrent: int,
                 timeout_sec: float, max_audio_sec: float | None = None, drain: DrainGate | None = None):
        self._service = service
        self._loop = loop
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._running = 0
        self._running_lock = threading.Lock()
        self.max_concurrent = max_concurrent
        self._timeout_sec = timeout_sec
        self._max_audio_sec = max_audio_sec or None
        self._drain = drain or DrainGate()

    def transcribe(self, data: bytes, request: SessionRequest, peer: str,
                   disconnected: Disconnected = _connected) -> Transcription:
        """Blocking, on a worker thread: the file's finals as segments; every refusal is coded.
        `disconnected()` turns true once the client has hung up: the upload is cancelled then."""
        self._drain.check("new uploads")
        if not self._slots.acquire(blocking=False):
            raise ApplianceError("ERR1007", f"{self.max_concurrent} uploads are being transcribed "
                                 "(openai.max_concurrent_requests); retry shortly",
                                 retry_after_sec=BUSY_RETRY_AFTER_SEC)
        self._count(+1)
        try:
            return _Run(self, time.monotonic() + self._timeout_sec, disconnected).transcribe(data, request, peer)
        finally:
            self._count(-1)
            self._slots.release()

    @property
    def running(self) -> int:
        """Uploads holding a slot now."""
        return self._running

    def _count(self, step: int) -> None:
        with self._running_lock:
            self._running += step

    async def _open(self, request: SessionRequest, peer: str):
        settings = self._service.create_session(request, peer=peer)
        stream = PushStream(self._service, settings, peer, _ignore)
        stream.start()
        return stream, settings


class _Run:
    """One upload on its worker thread: each step waits on the loop until the deadline, and stops as
    soon as the client is gone."""

    def __init__(self, owner: FileTranscriber, deadline: float, disconnected: Disconnected):
        self._owner = owner
        self._loop = owner._loop
        self._deadline = deadline
        self._disconnected = disconnected

    def transcribe(self, data: bytes, request: SessionRequest, peer: str) -> Transcription:
        # Admission (the key, the caps) before the file is touched: a caller who may not transcribe
        # never gets a decoder child.
        stream, settings = self._call(self._owner._open(request, peer))
        try:
            upload = SandboxedUpload(data, max_duration_sec=self._owner._max_audio_sec)
            try:
                for pcm16 in upload.blocks():
                    self._check_client()
                    self._call(stream.send(pcm16, MODEL_SAMPLE_RATE_HZ))
                finals = self._call(stream.finish())
            finally:
                upload.close()
        except BaseException:
            # The file was refused, the client hung up, or the request failed or timed out: free the
            # session, its slots and caps now (its decodes stop with it).
            asyncio.run_coroutine_threadsafe(stream.cancel(), self._loop).result(CANCEL_WAIT_SEC)
            raise
        return _transcription(finals, upload.decoded_sec, settings.task, settings.model_id)

    def _check_client(self) -> None:
        if self._disconnected():
            raise ApplianceError("ERR1012", "the client hung up before its transcript was ready; the upload "
                                 "was cancelled")

    def _call(self, step: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(step, self._loop)
        while True:
            left = self._deadline - time.monotonic()
            try:
                if left <= 0:
                    raise FutureTimeout
                return future.result(timeout=min(left, POLL_SEC))
            except FutureTimeout:
                if left <= POLL_SEC:
                    future.cancel()
                    raise ApplianceError("ERR1012", f"the upload took longer than {self._owner._timeout_sec:g} s "
                                         "to transcribe (openai.request_timeout_sec)") from None
            try:
                self._check_client()
            except ApplianceError:
                future.cancel()
                raise


async def _ignore(result: RecognitionResult) -> None:
    """Uploads answer once, with every final; nothing is sent while they decode."""


def _transcription(finals: list[RecognitionResult], duration_sec: float, task: str, model_id: str) -> Transcription:
    segments = [Segment(r.start_sec, r.end_sec, r.text.strip(), r.words) for r in finals if r.text.strip()]
    language = next((r.language for r in finals if r.language), "")
    return Transcription(segments, language, round(duration_sec, 3), task, model_id)
