"""What the SDK hands its caller: results (`TimedResult`, `Word`), the stream they come on
(`ResultStream`), failures (`SttError`), and the send-time log behind `latency_sec` (`SentAudioLog`).
Re-exported by clients.sdk, where callers import them from.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from appliance.api import stt_pb2

_ERROR_CODE_RE = re.compile(r"^\s*(ERR\d{4})\s*:?\s*(.*)$", re.DOTALL)


class SttError(Exception):
    """A failed call. `code` is the server's "ERR10xx" (None when the failure came from
    gRPC itself, e.g. an unreachable server), `status` the grpc.StatusCode."""

    def __init__(self, message: str, *, code: str | None = None,
                 status: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> SttError:
        status = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else None) or str(err)
        match = _ERROR_CODE_RE.match(details)
        if match:
            return cls(match.group(2), code=match.group(1), status=status)
        return cls(details, code=None, status=status)

    def __str__(self) -> str:
        if self.code:
            return f"{self.code}: {self.message}"
        if self.status is not None:
            return f"{self.status.name}: {self.message}"
        return self.message


SPEECH_EVENTS = {stt_pb2.SPEECH_STARTED: "started", stt_pb2.SPEECH_ENDED: "ended"}


@dataclass(frozen=True)
class Word:
    word: str
    start_sec: float
    end_sec: float
    probability: float


@dataclass(frozen=True)
class TimedResult:
    """An STTResult plus `latency_sec`: receive time minus the time the client had
    sent the audio up to the result's end_sec (see SentAudioLog)."""

    session_id: str
    utterance_index: int
    is_final: bool
    text: str
    committed_text: str
    unstable_text: str
    start_sec: float
    end_sec: float
    language: str
    decode_latency_sec: float
    model_id: str
    latency_sec: float
    language_probability: float = 0.0
    partials_dropped: int = 0
    speech_event: str = ""  # "started" / "ended" on a speech event (attribute speech_events=true)
    words: tuple[Word, ...] = ()  # finals with the attribute word_timestamps=true
    confidence: float = 0.0  # the decoder's, 0-1


    @classmethod
    def from_proto(cls, msg: stt_pb2.STTResult, latency_sec: float) -> TimedResult:
        return cls(
            session_id=msg.session_id,
            utterance_index=msg.utterance_index,
            is_final=msg.is_final,
            text=msg.text,
            committed_text=msg.committed_text,
            unstable_text=msg.unstable_text,
            start_sec=msg.start_sec,
            end_sec=msg.end_sec,
            language=msg.language,
            decode_latency_sec=msg.decode_latency_sec,
            model_id=msg.model_id,
            latency_sec=latency_sec,
            language_probability=msg.language_probability,
            partials_dropped=msg.partials_dropped,
            speech_event=SPEECH_EVENTS.get(msg.speech_event, ""),
            words=tuple(Word(w.word, w.start_sec, w.end_sec, w.probability) for w in msg.words),
            confidence=msg.confidence,
        )


class ResultStream(Iterator[TimedResult]):
    """The results of one stream as they arrive (iterate it), plus what a fleet operator watches:
    `nodes`, the names of the nodes that served it in order (one per connection; the `stt-node`
    header), and `resumes`, how many times it re-attached after a dropped connection. With
    keep-listening (`clients.keep_listening`), `reopens` counts the sessions opened after an idle
    timeout and `session_ids` lists every session the stream ran through, in order."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.resumes = 0
        self.reopens = 0
        self.session_ids: list[str] = []
        self._results: Iterator[TimedResult] = iter(())

    def __iter__(self) -> ResultStream:
        return self

    def __next__(self) -> TimedResult:
        return next(self._results)

    def close(self) -> None:
        """Stop the stream (as leaving the loop early does)."""
        close = getattr(self._results, "close", None)
        if close is not None:
            close()


class SentAudioLog:
    """When each chunk went out: (cumulative audio end, seconds; monotonic send time).

    Written by the gRPC request thread, read by the thread iterating results.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._audio_end_sec: list[float] = []
        self._sent_monotonic_sec: list[float] = []

    def record(self, audio_end_sec: float, sent_monotonic_sec: float) -> None:
        with self._lock:
            self._audio_end_sec.append(audio_end_sec)
            self._sent_monotonic_sec.append(sent_monotonic_sec)

    @property
    def audio_sent_sec(self) -> float:
        with self._lock:
            return self._audio_end_sec[-1] if self._audio_end_sec else 0.0

    def forget_before(self, audio_sec: float) -> None:
        """Drop the entries of chunks that end before `audio_sec` (the last one stays): a stream that
        runs for days would otherwise keep one entry per chunk it ever sent."""
        with self._lock:
            drop = min(bisect.bisect_left(self._audio_end_sec, audio_sec), len(self._audio_end_sec) - 1)
            if drop > 0:
                del self._audio_end_sec[:drop]
                del self._sent_monotonic_sec[:drop]

    def __len__(self) -> int:
        with self._lock:
            return len(self._audio_end_sec)

    def sent_time_for(self, end_sec: float) -> float | None:
        """Send time of the first chunk whose cumulative end reaches end_sec; the last
        chunk's when end_sec lies past everything sent; None before any chunk."""
        with self._lock:
            if not self._audio_end_sec:
                return None
            # A tolerance of 1 µs: the server's end_sec is rounded float arithmetic too.
            index = bisect.bisect_left(self._audio_end_sec, end_sec - 1e-6)
            return self._sent_monotonic_sec[min(index, len(self._sent_monotonic_sec) - 1)]

    def latency_sec(self, end_sec: float, received_monotonic_sec: float) -> float:
        sent = self.sent_time_for(end_sec)
        return float("nan") if sent is None else received_monotonic_sec - sent
