"""One upgraded `/v1/listen` connection: binary audio in (raw linear16, or Opus in Ogg or WebM decoded
by `appliance.audio_stream`, as the options say), Deepgram's JSON out.

Audio goes into a `PushStream` (the path Wyoming and the OpenAI route take: the same sessions,
scheduler and caps as gRPC) from the first binary message on; the session was made at the upgrade.
Results come back as `Results` (interim from partials with interim_results=true; finals with
is_final, and speech_final where the VAD closed the utterance), `SpeechStarted` (vad_events=true) and
`UtteranceEnd` (utterance_end_ms) from the gaps between words (`UtteranceEndWatch`).

Control messages: `KeepAlive` is answered by nothing and extends nothing (chatter: the first-message
and idle deadlines of the `ConnectionClock` still run); `Finalize` ends the open utterance now, by
feeding the endpointer the silence it waits for (times in results leave it out), and its final
carries from_finalize (with nothing open, the final still on its way carries it, or an empty final
answers at once, as Deepgram's does); `CloseStream` flushes the open utterance, sends `Metadata` and closes 1000. A
text message that is not one of them is refused with an `Error` frame (SchemaError) and a close.
Every refusal is an `Error` frame carrying the ERR code, then a close whose reason starts with it.
"""

from __future__ import annotations

import json
import logging
import traceback

from websockets.exceptions import ConnectionClosed

from appliance.audio_stream import ContainerOpus
from appliance.config import WebSocketConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import ConnectionClock, Deadlines
from appliance.observability.log_guard import ThrottledLog
from appliance.streaming.push import PushStream
from appliance.streaming.types import RecognitionResult
from appliance.transport.websocket import results as shape
from appliance.transport.websocket.handshake import LiveConnection
from appliance.transport.websocket.pcm import Linear16
from appliance.transport.websocket.utterance_end import UtteranceEndWatch

log = logging.getLogger(__name__)
failures = ThrottledLog(log, per_minute=5)
CONTROL_TYPES = ("KeepAlive", "Finalize", "CloseStream")
MAX_CONTROL_CHARS = 1024  # {"type": "CloseStream"} and its like; nesting or padding beyond is no control message
FINALIZE_MARGIN_SEC = 0.3  # silence beyond the endpoint's own, so the VAD's release is past doubt
CLOSE_POLICY, CLOSE_TRY_LATER, CLOSE_INTERNAL, CLOSE_TOO_BIG = 1008, 1013, 1011, 1009
TRY_LATER_CODES = frozenset({"ERR1007", "ERR1008", "ERR1009", "ERR1014", "ERR1015"})


def deadlines(config: WebSocketConfig) -> Deadlines:
    return Deadlines(first_event_sec=config.first_message_timeout_sec, idle_sec=config.idle_timeout_sec,
                     setting="websocket.idle_timeout_sec")


def close_code(code: str) -> int:
    if code in TRY_LATER_CODES:
        return CLOSE_TRY_LATER
    return CLOSE_INTERNAL if code == "ERR1016" else CLOSE_POLICY


def control_type(text: str) -> str:
    """The `type` of a control message; ERR1010 for anything else."""
    if len(text) > MAX_CONTROL_CHARS:
        raise ApplianceError("ERR1010", f"a text message of {len(text)} characters; control messages are at most "
                             f"{MAX_CONTROL_CHARS} (audio goes in binary messages)")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ApplianceError("ERR1010", "a text message is not JSON; expected {\"type\": \"KeepAlive\"}, "
                             "Finalize or CloseStream (audio goes in binary messages)") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind not in CONTROL_TYPES:
        raise ApplianceError("ERR1010", f"unknown control message type {str(kind)[:40]!r}; expected one of "
                             f"{', '.join(CONTROL_TYPES)}")
    return str(kind)


class LiveSession:
    def __init__(self, connection: LiveConnection, config: WebSocketConfig):
        assert connection.accepted is not None
        self._ws = connection
        self._service = connection.service
        self._options = connection.accepted.options
        self._settings = connection.accepted.settings
        self._clock = ConnectionClock(deadlines(config))
        self._pcm: Linear16 | ContainerOpus = (ContainerOpus() if self._options.container else
                                               Linear16(self._options.sample_rate_hz, self._options.channels))
        self._timeline = shape.Timeline()
        self._timeline_sec = 0.0  # audio the stream has had, added silence included
        self._stream: PushStream | None = None
        self._open_utterance: int | None = None
        self._ended: set[int] = set()  # utterances the VAD closed (their final is speech_final)
        self._finalizing: set[int] = set()  # utterances a Finalize closed
        self._model_uuid = shape.model_uuid(self._settings.model_id)
        gap_ms = self._options.utterance_end_ms
        self._gaps = UtteranceEndWatch(gap_ms / 1000) if gap_ms else None
        connection.streamed = True

    async def run(self) -> None:
        try:
            refusal = await self._serve()
            if refusal is not None:
                await self._refuse(refusal)
        finally:
            if self._stream is not None:
                stream, self._stream = self._stream, None
                await stream.cancel()
            self._service.discard_unused(self._settings.session_id)

    async def _serve(self) -> ApplianceError | None:
        try:
            while True:
                message = await self._clock.within(self._ws.recv())
                if isinstance(message, bytes):
                    await self._audio(message)
                    self._clock.progress()
                elif await self._control(message):
                    return None
        except ApplianceError as err:
            return err
        except ConnectionClosed:
            if self._ws.protocol.close_sent is not None and self._ws.protocol.close_sent.code == CLOSE_TOO_BIG:
                self._ws.door.refused(ApplianceError("ERR1003", "message over websocket.max_message_bytes"),
                                      "message refused")
            return None
        except Exception:  # a bug of ours: the client still hears a code
            failures.info("internal", "WebSocket stream failed: %s", traceback.format_exc(limit=8))
            return ApplianceError("ERR1016", "internal error while handling this WebSocket stream (logged)")

    async def _refuse(self, err: ApplianceError) -> None:
        self._ws.door.refused(err, "stream refused")
        variant = "SchemaError" if err.code == "ERR1010" else "Error"
        self._give_slot_back()
        try:
            await self._ws.send(json.dumps(shape.error(err.code, err.message, variant=variant)))
            reason = f"{err.code}: {err.message}".encode()[:120].decode(errors="ignore")  # a close reason: 123 bytes
            await self._ws.close(close_code(err.code), reason)
        except ConnectionClosed:
            pass

    async def _audio(self, message: bytes) -> None:
        if self._stream is None:
            self._stream = PushStream(self._service, self._settings, self._ws.peer, self._on_result)
            self._stream.start()
        for piece in self._pcm.pieces(message):
            await self._stream.send(piece, self._pcm.sample_rate_hz)
            self._timeline_sec += len(piece) / 2 / self._pcm.sample_rate_hz
            if self._gaps is not None:
                await self._utterance_end(self._gaps.audio(self._timeline.client_sec(self._timeline_sec)))

    async def _control(self, text: str) -> bool:
        """Act on one control message; True when the connection is done (CloseStream)."""
        kind = control_type(text)
        if kind == "Finalize":
            await self._finalize()
        elif kind == "CloseStream":
            await self._close_stream()
            return True
        return False  # KeepAlive: chatter, nothing to answer

    async def _finalize(self) -> None:
        if self._stream is None or self._open_utterance is None:
            await self._finalize_nothing_open()
            return
        self._finalizing.add(self._open_utterance)
        seconds = self._settings.vad_silence_sec + FINALIZE_MARGIN_SEC
        self._timeline.add_silence(self._timeline_sec, seconds)
        rate = self._pcm.sample_rate_hz
        silence = Linear16.silence(rate, seconds)
        step = 2 * int(rate * 0.5)
        for i in range(0, len(silence), step):
            await self._stream.send(silence[i:i + step], rate)
        self._timeline_sec += seconds

    async def _finalize_nothing_open(self) -> None:
        """Every Finalize is answered by a final marked from_finalize, as Deepgram does (agent frameworks
        end the user's turn on it, and wait out a timeout without it): the final of an utterance the VAD
        closed that is still on its way, or else an empty one at the stream's current time."""
        if self._ended:
            self._finalizing.add(max(self._ended))
            return
        at = self._timeline_sec
        empty = RecognitionResult(
            session_id=self._settings.session_id, utterance_index=-1, is_final=True, text="", committed_text="",
            unstable_text="", start_sec=at, end_sec=at, language=self._settings.language or "",
            language_probability=0.0, decode_latency_sec=0.0, model_id=self._settings.model_id)
        await self._send_results(empty, speech_final=False, from_finalize=True)

    async def _close_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.finish()  # the open utterance's final (is_final, not from_finalize: as Deepgram's)
        if self._gaps is not None:
            await self._utterance_end(self._gaps.closing(self._timeline.client_sec(self._timeline_sec)))
        await self._ws.send(json.dumps(shape.metadata(
            self._settings.session_id, duration_sec=self._pcm.duration_sec, channels=self._pcm.channels,
            sha256=self._pcm.sha256.hexdigest(), model_id=self._settings.model_id, model_uuid=self._model_uuid)))
        self._give_slot_back()
        await self._ws.close(1000, "CloseStream")

    def _give_slot_back(self) -> None:
        """Before the client hears the close: one that reconnects at once must find its share free (the
        closing handshake that follows is bounded by close_timeout)."""
        if self._ws.slot is not None:
            self._ws.slot.release()

    async def _on_result(self, result: RecognitionResult) -> None:
        index = result.utterance_index
        if result.speech_event == "started":
            self._open_utterance = index
            if self._options.vad_events:
                await self._ws.send(json.dumps(shape.speech_started(result.start_sec, self._timeline)))
            if self._gaps is not None:
                await self._utterance_end(self._gaps.speech_started(self._timeline.client_sec(result.start_sec)))
            return
        if result.speech_event == "ended":
            self._ended.add(index)
            self._open_utterance = None if self._open_utterance == index else self._open_utterance
            return
        if result.speech_event or result.is_checkpoint:
            return
        if not result.is_final:
            if self._options.interim_results and result.text.strip():
                await self._send_results(result, speech_final=False, from_finalize=False)
            return
        from_finalize = index in self._finalizing
        speech_final = self._options.speech_final and index in self._ended and not from_finalize
        self._finalizing.discard(index)
        self._ended.discard(index)
        if self._open_utterance == index:
            self._open_utterance = None
        if result.text.strip() or from_finalize:
            await self._send_results(result, speech_final=speech_final, from_finalize=from_finalize)
        elif self._gaps is not None:
            self._gaps.no_words()

    async def _utterance_end(self, last_word_end: float | None) -> None:
        if last_word_end is not None:
            await self._ws.send(json.dumps(shape.utterance_end(last_word_end)))

    async def _send_results(self, result: RecognitionResult, *, speech_final: bool, from_finalize: bool) -> None:
        message = shape.results(result, self._options, self._timeline, speech_final=speech_final,
                                from_finalize=from_finalize, model_uuid=self._model_uuid)
        words = message["channel"]["alternatives"][0]["words"]
        if self._gaps is not None and words:
            await self._utterance_end(self._gaps.words(words[0]["start"]))
        await self._ws.send(json.dumps(message))
        if self._gaps is not None and result.is_final:
            if words:
                self._gaps.finalized(words[-1]["end"])
            else:
                self._gaps.no_words()
