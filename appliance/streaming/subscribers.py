"""The stream listeners the appliance wires in: audio persistence, the transcript sink, metrics."""

from __future__ import annotations

from appliance.errors import ApplianceError
from appliance.observability.metrics import ApplianceMetrics
from appliance.observability.transcripts import TranscriptSink
from appliance.storage import AudioStore
from appliance.streaming.listeners import IgnoreStream
from appliance.streaming.types import RecognitionResult


class AudioRecorder(IgnoreStream):
    """Persists accepted audio (`storage.persist_audio`); the store's queue never blocks a stream."""

    def __init__(self, store: AudioStore):
        self._store = store

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        self._store.put(session_id, pcm16, sample_rate_hz)

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None:
        self._store.end_session(session_id)


class TranscriptWriter(IgnoreStream):
    """Writes each final with text to the opt-in transcript file (`logging.log_transcripts`)."""

    def __init__(self, sink: TranscriptSink):
        self._sink = sink

    def result_sent(self, result: RecognitionResult) -> None:
        if result.is_final and result.text:
            self._sink.write(result.session_id, result.utterance_index, result.text, result.start_sec, result.end_sec)


class StreamMetrics(IgnoreStream):
    """Results and stream errors into the Prometheus metrics and the status page's recent finals."""

    def __init__(self, metrics: ApplianceMetrics):
        self._metrics = metrics

    def result_sent(self, result: RecognitionResult) -> None:
        if result.speech_event:
            return  # not a decode's result: no latency, no real-time factor
        rtf = result.decode_latency_sec / result.decoded_audio_sec if result.decoded_audio_sec else None
        self._metrics.result_sent(is_final=result.is_final, latency_sec=result.queued_to_sent_sec, rtf=rtf)

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None:
        if error is not None:
            self._metrics.error(error.code, "stream")
