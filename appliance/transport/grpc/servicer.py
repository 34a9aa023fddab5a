"""stt.v1.SpeechToText servicer: translates messages and errors, nothing else."""

from __future__ import annotations

import logging

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.errors import ApplianceError
from appliance.sessions import SessionService
from appliance.streaming.session import SessionRequest, SessionSettings
from appliance.streaming.types import AudioIn, RecognitionResult
from appliance.transport.grpc.status import abort

log = logging.getLogger(__name__)

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


def result_to_proto(r: RecognitionResult) -> stt_pb2.STTResult:
    return stt_pb2.STTResult(
        session_id=r.session_id, utterance_index=r.utterance_index, is_final=r.is_final, text=r.text,
        committed_text=r.committed_text, unstable_text=r.unstable_text, start_sec=r.start_sec, end_sec=r.end_sec,
        language=r.language, language_probability=r.language_probability,
        decode_latency_sec=r.decode_latency_sec, model_id=r.model_id, partials_dropped=r.partials_dropped)


async def _chunks(request_iterator):
    async for msg in request_iterator:
        yield AudioIn(session_id=msg.session_id, pcm16=msg.pcm16, sample_rate_hz=msg.sample_rate_hz,
                      session_token=msg.session_token)


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    def __init__(self, sessions: SessionService):
        self._sessions = sessions

    async def CreateSession(self, request, context):
        try:
            metadata = {key.lower(): value for key, value in (context.invocation_metadata() or ())
                        if isinstance(value, str)}
            settings = self._sessions.create_session(session_request_from_proto(request), peer=context.peer(),
                                                    metadata=metadata)
        except ApplianceError as err:
            log.info("CreateSession refused: %s", err.code)
            await abort(context, err)
        # Batch uploads are exempt from max_chunk_ms (one chunk holds the whole file).
        max_chunk_ms = None if settings.upload_mode == "batch" else self._sessions.max_chunk_ms
        return session_response_to_proto(settings, MODEL_SAMPLE_RATE_HZ, max_chunk_ms)

    async def StreamingRecognize(self, request_iterator, context):
        try:
            async for result in self._sessions.stream(_chunks(request_iterator)):
                yield result_to_proto(result)
        except ApplianceError as err:
            log.info("stream ended with %s", err.code)
            await abort(context, err)
