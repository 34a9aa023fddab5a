"""stt.v1.SpeechToText servicer: translates messages and errors, nothing else.

Each StreamingRecognize call is admitted through the gRPC `Door` when it opens (the drain gate,
server.max_open_streams and the client address's share, server.max_sessions_per_ip), before its
first chunk names a session: a host opening calls and never sending a byte runs into its own cap,
not the box's. The slot is given back when the call ends, however it ends.

Requests are parsed by `register`'s deserializers, which turn bytes that are not a valid message
(invalid UTF-8 in a string field, truncated fields) into `Unparseable` instead of letting grpcio
answer UNKNOWN with a traceback; the handlers refuse those with ERR1010.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError, Message

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.errors import ApplianceError
from appliance.frontdoor import Door, grpc_peer_address
from appliance.observability.log_guard import ThrottledLog
from appliance.sessions import SessionService
from appliance.streaming.session import SessionRequest, SessionSettings
from appliance.streaming.types import AudioIn, RecognitionResult
from appliance.transport.grpc.status import abort

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)
SERVICE = "stt.v1.SpeechToText"


@dataclass(frozen=True)
class Unparseable:
    """A request message that could not be parsed; `reason` is the parser's message, cut short."""

    what: str
    reason: str

    def error(self) -> ApplianceError:
        return ApplianceError("ERR1010", f"{self.what} could not be parsed as a protobuf message: {self.reason}")


def _tolerant(message_type: type[Message]) -> Callable[[bytes], Message | Unparseable]:
    def parse(data: bytes) -> Message | Unparseable:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError) as err:
            return Unparseable(message_type.__name__, str(err)[:120])
    return parse

_VAD_MODE_IN = {stt_pb2.VAD_MODE_UNSPECIFIED: "", stt_pb2.VAD_MODE_CONTINUE: "continue",
                stt_pb2.VAD_MODE_AUTO_END: "auto"}
_VAD_MODE_OUT = {"continue": stt_pb2.VAD_MODE_CONTINUE, "auto": stt_pb2.VAD_MODE_AUTO_END}
_TASK_IN = {stt_pb2.TASK_UNSPECIFIED: "", stt_pb2.TASK_TRANSCRIBE: "transcribe", stt_pb2.TASK_TRANSLATE: "translate"}
_TASK_OUT = {"transcribe": stt_pb2.TASK_TRANSCRIBE, "translate": stt_pb2.TASK_TRANSLATE}


def session_request_from_proto(msg: stt_pb2.SessionRequest) -> SessionRequest:
    return SessionRequest(
        session_id=msg.session_id, attributes=dict(msg.attributes), vad_mode=_VAD_MODE_IN.get(msg.vad_mode, "?"),
        vad_silence_sec=msg.vad_silence_sec if msg.HasField("vad_silence_sec") else None,
        vad_threshold=msg.vad_threshold if msg.HasField("vad_threshold") else None,
        language=msg.language, task=_TASK_IN.get(msg.task, "?"), decode_profile=msg.decode_profile,
        model_id=msg.model_id, require_token=msg.require_token)


def session_response_to_proto(s: SessionSettings, model_sample_rate_hz: int, max_chunk_ms: float | None
                              ) -> stt_pb2.SessionResponse:
    return stt_pb2.SessionResponse(
        session_id=s.session_id, session_token=s.token, model_id=s.model_id, decode_profile=s.decode_profile,
        language=s.language or "", task=_TASK_OUT[s.task], vad_mode=_VAD_MODE_OUT[s.vad_mode],
        vad_silence_sec=s.vad_silence_sec, vad_threshold=s.vad_threshold, partials_enabled=s.partials,
        model_sample_rate_hz=model_sample_rate_hz, max_chunk_ms=int(max_chunk_ms or 0))


_SPEECH_EVENT_OUT = {"started": stt_pb2.SPEECH_STARTED, "ended": stt_pb2.SPEECH_ENDED}


def result_to_proto(r: RecognitionResult) -> stt_pb2.STTResult:
    return stt_pb2.STTResult(
        session_id=r.session_id, utterance_index=r.utterance_index, is_final=r.is_final, text=r.text,
        committed_text=r.committed_text, unstable_text=r.unstable_text, start_sec=r.start_sec, end_sec=r.end_sec,
        language=r.language, language_probability=r.language_probability,
        decode_latency_sec=r.decode_latency_sec, model_id=r.model_id, partials_dropped=r.partials_dropped,
        speech_event=_SPEECH_EVENT_OUT.get(r.speech_event, stt_pb2.SPEECH_EVENT_UNSPECIFIED),
        words=[stt_pb2.Word(word=w.word, start_sec=w.start_sec, end_sec=w.end_sec, probability=w.probability)
               for w in r.words],
        confidence=r.confidence, resume_token=r.resume_token, resume_from_sec=r.resume_from_sec)


async def _chunks(request_iterator):
    async for msg in request_iterator:
        if isinstance(msg, Unparseable):
            raise msg.error()
        yield AudioIn(session_id=msg.session_id, pcm16=msg.pcm16, sample_rate_hz=msg.sample_rate_hz,
                      session_token=msg.session_token)


NODE_HEADER = "stt-node"  # initial metadata on every call: which node of a fleet served it


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    def __init__(self, sessions: SessionService, door: Door, node_name: str = ""):
        self._sessions = sessions
        self._door = door
        self._node_metadata = ((NODE_HEADER, node_name),) if node_name else ()

    async def CreateSession(self, request, context):
        await context.send_initial_metadata(self._node_metadata)
        try:
            if isinstance(request, Unparseable):
                raise request.error()
            metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())
                        if isinstance(value, str)}
            settings = self._sessions.create_session(session_request_from_proto(request), peer=context.peer(),
                                                    metadata=metadata)
        except ApplianceError as err:
            refusals.info(err.code, "CreateSession refused: %s", err.code)
            await abort(context, err)
        # Batch uploads are exempt from max_chunk_ms (one chunk holds the whole file).
        max_chunk_ms = None if settings.upload_mode == "batch" else self._sessions.max_chunk_ms
        return session_response_to_proto(settings, MODEL_SAMPLE_RATE_HZ, max_chunk_ms)

    async def StreamingRecognize(self, request_iterator, context):
        await context.send_initial_metadata(self._node_metadata)
        try:
            slot = self._door.admit(grpc_peer_address(context.peer()), "new streams")
        except ApplianceError as err:  # logged (throttled) by the door
            await abort(context, err)
            return
        with slot:
            try:
                # aclosing: a cancel while this handler waits at `yield` closes the stream's generator (and
                # releases its session, VAD slot, buffers and caps) right here, not whenever it is collected.
                async with aclosing(self._sessions.stream(_chunks(request_iterator), peer=context.peer())) as results:
                    async for result in results:
                        yield result_to_proto(result)
            except ApplianceError as err:
                refusals.info(err.code, "stream ended with %s", err.code)
                await abort(context, err)


def register(servicer: SpeechToTextServicer, server: grpc.aio.Server) -> None:
    """Serve `servicer` on `server`, as the generated add_SpeechToTextServicer_to_server does, but
    with deserializers that hand malformed requests to the handlers as `Unparseable`."""
    handlers = {
        "CreateSession": grpc.unary_unary_rpc_method_handler(
            servicer.CreateSession, request_deserializer=_tolerant(stt_pb2.SessionRequest),
            response_serializer=stt_pb2.SessionResponse.SerializeToString),
        "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
            servicer.StreamingRecognize, request_deserializer=_tolerant(stt_pb2.AudioChunk),
            response_serializer=stt_pb2.STTResult.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
