"""One Wyoming connection: describe → info; transcribe → audio-start → audio-chunk* → audio-stop →
transcript (with transcript-start/-chunk/-stop around it for clients that stream transcripts).

Events are read by `EventReader` (strict framing, bounded size) against the connection's
`ConnectionClock`: the first event must come within `wyoming.idle_timeout_sec` of connecting, and
after it only progress — transcribe, audio-start, audio-chunk, audio-stop, a finished transcript —
restarts the idle deadline; describe, ping and unknown events are answered but extend nothing, so
chatter cannot hold a connection slot. Audio goes into a `PushStream` as it arrives, so the pipeline
endpoints and decodes while the speaker talks. Every refusal is one `error` event carrying the ERR
code (logged through the door's throttled log), and then the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from appliance.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from appliance.config import WyomingConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import ConnectionClock, Deadlines, Slot
from appliance.observability.log_guard import ThrottledLog
from appliance.sessions import SessionService
from appliance.streaming.push import PushStream
from appliance.streaming.session import SessionRequest
from appliance.streaming.types import RecognitionResult
from appliance.transport.wyoming import messages
from appliance.transport.wyoming.wire import EventReader

log = logging.getLogger(__name__)
failures = ThrottledLog(log, per_minute=5)  # our own bugs: visible, but never one traceback per connection
# After a refusal the client may still be sending (audio it queued before the error reached it).
# Closing with its bytes unread would reset the connection and could lose the error event, so what
# it sends is read and dropped first, up to these bounds.
LINGER_SEC = 2.0
LINGER_BYTES = 4 * 1024 * 1024
SAMPLE_WIDTHS = (1, 2, 3, 4)  # bytes per sample the converter turns into 16-bit
CHANNEL_COUNTS = (1, 2)  # the converter mixes stereo down; more channels it cannot


def deadlines(config: WyomingConfig) -> Deadlines:
    return Deadlines(first_event_sec=config.idle_timeout_sec, idle_sec=config.idle_timeout_sec,
                     setting="wyoming.idle_timeout_sec")


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
    except (OSError, RuntimeError, TimeoutError):  # the client is gone already (ENOTCONN at write_eof, a reset)
        pass
    finally:
        writer.close()


def pcm16_mono(chunk: AudioChunk, converter: AudioChunkConverter) -> bytes:
    """The chunk as 16-bit mono at its own rate (the pipeline resamples); ERR1003 for a format
    the converter cannot take."""
    if not MIN_SAMPLE_RATE_HZ <= chunk.rate <= MAX_SAMPLE_RATE_HZ:
        raise ApplianceError("ERR1003", f"audio-chunk rate {chunk.rate}: expected whole Hz in "
                             f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ}")
    if chunk.width not in SAMPLE_WIDTHS or chunk.channels not in CHANNEL_COUNTS:
        raise ApplianceError("ERR1003", f"audio-chunk width {chunk.width} / channels {chunk.channels}: "
                             f"expected width in {SAMPLE_WIDTHS} and channels in {CHANNEL_COUNTS}")
    if len(chunk.audio) % (chunk.width * chunk.channels):
        raise ApplianceError("ERR1003", f"audio-chunk of {len(chunk.audio)} bytes is not whole frames of "
                             f"{chunk.width * chunk.channels} bytes")
    return converter.convert(chunk).audio


class WyomingHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, service: SessionService,
                 info: Info, peer: str, config: WyomingConfig, slot: Slot):
        super().__init__(reader, writer)
        self._service = service
        self._info = info
        self._peer = peer
        self._api_key = config.api_key
        self._slot = slot
        self._clock = ConnectionClock(deadlines(config))
        self._events = EventReader(reader, self._clock, config.max_event_bytes)
        self._request = Transcribe()
        self._stream: PushStream | None = None
        self._converter = AudioChunkConverter(width=2, channels=1)

    async def run(self) -> None:
        """Answer events until the client closes or we refuse (a coded `error` event before any close
        we cause); the stream is cancelled and the connection's slot given back however it ends."""
        try:
            refusal = await self._serve()
            await self.disconnect()
            if refusal is not None:
                self._slot.door.refused(refusal, "event refused")
                # The slot goes back before the client hears the refusal: a client that reconnects on
                # the close must find its share free (the linger that follows is bounded).
                self._slot.release()
                await send_error_and_close(self.reader, self.writer, Error(text=refusal.message, code=refusal.code))
        finally:
            try:
                await self.disconnect()
            finally:
                self.writer.close()
                self._slot.release()

    async def _serve(self) -> ApplianceError | None:
        try:
            while (event := await self._events.read()) is not None:
                self._clock.first_event_done()
                await self._dispatch(event)
        except ApplianceError as err:
            return err
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away (a reset, a write to a closed socket)
        except Exception:  # a bug of ours, not the client's: the client still gets a code
            failures.info("internal", "Wyoming handler failed: %s", traceback.format_exc(limit=8))
            return ApplianceError("ERR1016", "internal error while handling this Wyoming event (logged)")
        return None

    async def disconnect(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.cancel()

    async def handle_event(self, event: Event) -> bool:
        await self._dispatch(event)
        return True

    async def _dispatch(self, event: Event) -> None:
        kind = event.type
        if Describe.is_type(kind):
            await self.write_event(self._info.event())
        elif Ping.is_type(kind):
            await self.write_event(Pong(text=messages.ping(event).text).event())
        elif Transcribe.is_type(kind):
            self._request = messages.transcribe(event)
            self._clock.progress()
        elif AudioStart.is_type(kind):
            messages.audio_start(event)
            await self._start()
            self._clock.progress()
        elif AudioChunk.is_type(kind):
            await self._audio(messages.audio_chunk(event))
            self._clock.progress()
        elif AudioStop.is_type(kind):
            messages.audio_stop(event)
            await self._finish()
            self._clock.progress()  # from the transcript on: the decode's wait is not the client's idleness
        # Other event types are not ours to answer: Wyoming peers ignore them (chatter: no progress).

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
        await self._stream.send(pcm16_mono(chunk, self._converter), chunk.rate)

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
