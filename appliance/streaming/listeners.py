"""Who hears what a stream does: audio persistence, the transcript sink and metrics subscribe here.

A `StreamListener` gets the audio a stream accepted, each result as it leaves, and the stream's end
(with its error, if any). Listeners are called on the event loop and must not block: the audio
store and the transcript sink hand the work to their own threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from appliance.errors import ApplianceError
from appliance.streaming.types import RecognitionResult


class StreamListener(Protocol):
    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None: ...

    def result_sent(self, result: RecognitionResult) -> None: ...

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None: ...


class StreamListeners:
    """Fans each event out to every listener, in order."""

    def __init__(self, listeners: Sequence[StreamListener] = ()):
        self._listeners = tuple(listeners)

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        for listener in self._listeners:
            listener.audio_received(session_id, pcm16, sample_rate_hz)

    def result_sent(self, result: RecognitionResult) -> None:
        for listener in self._listeners:
            listener.result_sent(result)

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None:
        for listener in self._listeners:
            listener.stream_ended(session_id, error)


class IgnoreStream:
    """A listener that hears nothing; subclasses pick the events they care about."""

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        pass

    def result_sent(self, result: RecognitionResult) -> None:
        pass

    def stream_ended(self, session_id: str, error: ApplianceError | None) -> None:
        pass
