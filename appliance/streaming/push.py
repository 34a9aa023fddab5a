"""A stream whose audio the transport pushes, one chunk at a time, as its protocol's events arrive
(Wyoming's audio-chunk, and any other transport without a request iterator of its own).

It runs `SessionService.stream` like a gRPC call does (same gate, caps, pipeline and scheduler) on
an iterator fed by `send`. The queue is short, so a sender the stream is not reading from waits in
`send`, and the transport stops reading its socket: backpressure reaches the client through TCP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from appliance.errors import ApplianceError
from appliance.sessions import SessionService
from appliance.streaming.session import SessionSettings
from appliance.streaming.types import AudioIn, RecognitionResult

QUEUED_CHUNKS = 4  # enough to keep the stream fed; more would only hide backpressure in memory


class PushStream:
    """start() → send()* → finish() -> the finals; `on_result` sees every result as it comes."""

    def __init__(self, service: SessionService, settings: SessionSettings, peer: str,
                 on_result: Callable[[RecognitionResult], Awaitable[None]]):
        self._service = service
        self._settings = settings
        self._peer = peer
        self._on_result = on_result
        self._chunks: asyncio.Queue[AudioIn | None] = asyncio.Queue(maxsize=QUEUED_CHUNKS)
        self._finals: list[RecognitionResult] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"push stream {self._settings.session_id[:8]}")

    async def _audio(self) -> AsyncIterator[AudioIn]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def _run(self) -> None:
        try:
            async with aclosing(self._service.stream(self._audio(), peer=self._peer)) as results:
                async for result in results:
                    if result.is_final:
                        self._finals.append(result)
                    await self._on_result(result)
        finally:
            # No audio at all (or refused before attaching): the session would wait out its expiry.
            self._service.discard_unused(self._settings.session_id)

    async def send(self, pcm16: bytes, sample_rate_hz: int) -> None:
        """Queue one chunk; waits while the stream is behind. Raises the stream's error (an
        ApplianceError with its code) once it has ended early, so the transport can report it."""
        await self._put(AudioIn(session_id=self._settings.session_id, pcm16=pcm16, sample_rate_hz=sample_rate_hz,
                                session_token=self._settings.token))

    async def finish(self) -> list[RecognitionResult]:
        """End of audio: the open utterance's final comes, then the finals in order (raises as `send`)."""
        await self._put(None)
        assert self._task is not None
        await self._task
        return self._finals

    async def cancel(self) -> None:
        """The client went away: stop the stream (its session, slots and caps are released)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _put(self, item: AudioIn | None) -> None:
        assert self._task is not None, "start() first"
        if not self._task.done():
            put = asyncio.ensure_future(self._chunks.put(item))
            await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                put.cancel()
            elif not self._task.done():
                return  # queued for a stream that is still running
        self._task.result()  # the stream's own error, if it ended with one
        if item is not None:
            # A stream in "continue" mode ends before its input only when the server drains it.
            raise ApplianceError("ERR1015", "the server is draining: the stream ended before this audio",
                                 retry_after_sec=5.0)
