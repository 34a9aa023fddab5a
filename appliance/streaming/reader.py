"""Reading a stream's chunks with an idle timeout and a way to end the input from the server side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

from appliance.errors import ApplianceError
from appliance.streaming.types import AudioIn


class ChunkReader:
    """`next()` gives the next chunk; StopAsyncIteration at the client's half-close or after `close()`
    (the server drains), ERR1012 after `timeout_sec` without a chunk (None or <= 0: no limit)."""

    def __init__(self, chunks: AsyncIterable[AudioIn], timeout_sec: float | None):
        self._iterator = chunks.__aiter__()
        self._timeout_sec = timeout_sec if timeout_sec and timeout_sec > 0 else None
        self._closed = asyncio.Event()

    def close(self) -> None:
        self._closed.set()

    async def next(self) -> AudioIn:
        if self._closed.is_set():
            raise StopAsyncIteration
        read = asyncio.ensure_future(self._iterator.__anext__())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait((read, closed), timeout=self._timeout_sec,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not read.done():
                read.cancel()  # also when this task is cancelled: no orphaned read of the stream
            elif not read.cancelled():
                read.exception()  # mark a half-close seen, even if this task is being cancelled
        if read in done:
            return read.result()
        if closed in done:
            raise StopAsyncIteration
        raise ApplianceError(
            "ERR1012", f"no audio received for {self._timeout_sec:g} s (server.session_timeout_sec)")
