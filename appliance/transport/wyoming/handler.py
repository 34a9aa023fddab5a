"""One Wyoming connection: describe → info; transcribe → audio-start → audio-chunk* → audio-stop →
transcript (with transcript-start/-chunk/-stop around it for clients that stream transcripts).

Events are read by the wyoming package's own parser through `BoundedReader`, which caps what one
event may make us buffer and how long a connection may sit between events. Audio goes into a
`PushStream` as it arrives, so the pipeline endpoints and decodes while the speaker talks and the
transcript after audio-stop waits only for the last utterance's final, as a gRPC client's would.
Every refusal is an `error` event carrying the ERR code, and then the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from appliance.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from appliance.errors import ApplianceError
from appliance.observability.log_guard import ThrottledLog
from appliance.sessions import SessionService
from appliance.streaming.push import PushStream
from appliance.streaming.session import SessionRequest
from appliance.streaming.types import RecognitionResult

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)
# After a refusal the client may still be sending (audio it queued before the error reached it).
# Closing with its bytes unread would reset the connection and could lose the error event, so what
# it sends is read and dropped first, up to these bounds.
LINGER_SEC = 2.0
LINGER_BYTES = 4 * 1024 * 1024
SAMPLE_WIDTHS = (1, 2, 3, 4)  # bytes per sample the converter turns into 16-bit
CHANNEL_COUNTS = (1, 2)  # the converter mixes stereo down; more channels it cannot


async def send_error_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, err: Error) -> None:
    """The coded `error` event, half-close, drop what the client still sends (bounded), close."""
    try:
        await async_write_event(err.event(), writer)
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + LINGER_SEC
        dropped = 0
        while dropped < LINGER_BYTES:
            left = deadline - asyncio.get_running_loop().time()
            data = await asyncio.wait_for(reader.read(65536), max(left, 0.001))
            if not data:
                break
            dropped += len(data)
    except (ConnectionError, RuntimeError, TimeoutError):
        pass
    finally:
        writer.close()


class BoundedReader:
    """The two calls `async_read_event` makes, each bounded: a JSON header line (the stream's own
    64 KiB line limit), data and payload blocks of at most `max_event_bytes` in all, and no wait
    longer than `idle_timeout_sec`. Past a bound it records why and reads as a malformed event."""

    def __init__(self, reader: asyncio.StreamReader, max_event_bytes: int, idle_timeout_sec: float):
        self._reader = reader
        self._max_event_bytes = max_event_bytes
        self._idle_timeout_sec = idle_timeout_sec
        self._event_bytes = 0
        self.refusal: ApplianceError | None = None
        self.at_eof = False

    async def readline(self) -> bytes:
        self._event_bytes = 0
        try:
            line = await asyncio.wait_for(self._reader.readline(), self._idle_timeout_sec)
        except TimeoutError:
            self.refusal = ApplianceError("ERR1012", f"no event within {self._idle_timeout_sec:g} s "
                                          "(wyoming.idle_timeout_sec)")
            return b""
        except ValueError:
            self.refusal = ApplianceError("ERR1010", "event header line longer than 64 KiB")
            raise
        self.at_eof = not line
        return line

    async def readexactly(self, n: int) -> bytes:
        self._event_bytes += n
        if n < 0 or self._event_bytes > self._max_event_bytes:
            self.refusal = ApplianceError("ERR1010", f"event of {self._event_bytes} bytes is over "
                                          f"wyoming.max_event_bytes={self._max_event_bytes}")
            raise ValueError(self.refusal.message)
        return await asyncio.wait_for(self._reader.readexactly(n), self._idle_timeout_sec)


def pcm16_mono(chunk: AudioChunk, converter: AudioChunkConverter) -> bytes:
    """The chunk as 16-bit mono at its own rate (the pipeline resamples); ERR1003 for a format
    the converter cannot take."""
    if type(chunk.rate) is not int or not MIN_SAMPLE_RATE_HZ <= chunk.rate <= MAX_SAMPLE_RATE_HZ:
        raise ApplianceError("ERR1003", f"audio-chunk rate {str(chunk.rate)[:16]!r}: expected whole Hz in "
                             f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ}")
    if chunk.width not in SAMPLE_WIDTHS or chunk.channels not in CHANNEL_COUNTS:
        raise ApplianceError("ERR1003", f"audio-chunk width {str(chunk.width)[:16]!r} / channels "
                             f"{str(chunk.channels)[:16]!r}: "
                             f"expected width in {SAMPLE_WIDTHS} and channels in {CHANNEL_COUNTS}")
    if len(chunk.audio) % (chunk.width * chunk.channels):
        raise ApplianceError("ERR1003", f"audio-chunk of {len(chunk.audio)} bytes is not whole frames of "
                             f"{chunk.width * chunk.channels} bytes")
    return converter.convert(chunk).audio


class WyomingHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, service: SessionService,
                 info: Info, peer: str, api_key: str, max_event_bytes: int, idle_timeout_sec: float,
                 on_close: Callable[[], None]):
        super().__init__(reader, writer)
        self._on_close = on_close
        self._service = service
        self._info = info
        self._peer = peer
        self._api_key = api_key
        self._events = BoundedReader(reader, max_event_bytes, idle_timeout_sec)
        self._request = Transcribe()
        self._stream: PushStream | None = None
        self._converter = AudioChunkConverter(width=2, channels=1)

    async def run(self) -> None:
        """wyoming's loop, with the bounded reader, and a coded `error` event before any close we cause."""
        refusal: ApplianceError | None = None
        try:
            while True:
                event = await async_read_event(self._events)  # type: ignore[arg-type]  # reads as a StreamReader
                if event is None:
                    refusal = self._events.refusal
                    if refusal is None and not self._events.at_eof:
                        refusal = ApplianceError("ERR1010", "malformed event (not a Wyoming event header with "
                                                 "JSON data)")
                    break
                if not await self.handle_event(event):
                    break
        except ApplianceError as err:
            refusal = err
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away mid-event
        finally:
            await self.disconnect()
            if refusal is not None:
                refusals.info(refusal.code, "Wyoming request refused: %s", refusal.code)
                await send_error_and_close(self.reader, self.writer, Error(text=refusal.message, code=refusal.code))
            self.writer.close()
            self._on_close()

    async def disconnect(self) -> None:
        if self._stream is not None:
            await self._stream.cancel()
            self._stream = None

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # from_event on data of the wrong shape
            raise ApplianceError("ERR1010", f"{event.type[:32]!r} event with unusable data "
                                 f"({type(err).__name__})") from None
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self._info.event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Transcribe.is_type(event.type):
            self._request = Transcribe.from_event(event)
        elif AudioStart.is_type(event.type):
            await self._start()
        elif AudioChunk.is_type(event.type):
            await self._audio(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._finish()
        # Other event types are not ours to answer: Wyoming peers ignore them.

    async def _start(self) -> None:
        if self._stream is not None:
            raise ApplianceError("ERR1010", "audio-start while a transcription is open; send audio-stop first")
        # "continue": one utterance's end does not end the stream; audio-stop does.
        request = SessionRequest(attributes={"api_key": self._api_key} if self._api_key else {}, vad_mode="continue",
                                 language=self._request.language or "", model_id=self._request.name or "",
                                 protocol="wyoming")
        settings = self._service.create_session(request, peer=self._peer)
        self._stream = PushStream(self._service, settings, self._peer, self._on_result)
        self._stream.start()
        await self.write_event(TranscriptStart(language=settings.language or None).event())

    async def _audio(self, chunk: AudioChunk) -> None:
        if self._stream is None:
            raise ApplianceError("ERR1010", "audio-chunk before audio-start")
        await self._stream.send(pcm16_mono(chunk, self._converter), int(chunk.rate))

    async def _finish(self) -> None:
        if self._stream is None:
            raise ApplianceError("ERR1010", "audio-stop before audio-start")
        stream, self._stream = self._stream, None
        finals = await stream.finish()
        text = " ".join(r.text.strip() for r in finals if r.text.strip())
        language = next((r.language for r in finals if r.language), None)
        await self.write_event(Transcript(text=text, language=language).event())
        await self.write_event(TranscriptStop().event())
        self._request = Transcribe()

    async def _on_result(self, result: RecognitionResult) -> None:
        if result.is_final and result.text.strip():
            await self.write_event(TranscriptChunk(text=result.text.strip()).event())
