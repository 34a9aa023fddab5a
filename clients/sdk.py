"""Synchronous Python SDK for the appliance's gRPC API (stt.v1.SpeechToText).

Owns the channel, CreateSession, and StreamingRecognize with realtime pacing and
client-side latency bookkeeping. One `SttClient` can run many sessions, one
stream at a time per iterator:

    with SttClient("127.0.0.1:50051") as client:
        session = client.create_session(vad_mode="continue")
        for result in client.stream_audio(session, pcm16, 16000):
            print(result.is_final, result.text, result.latency_sec)

Streams resume by default: when the connection drops (or the node drains), the SDK re-dials with
backoff, re-attaches with the session's latest resume ticket (on this node or another of a fleet)
and resends the audio the server still needs (`clients.resume`); the results go on as if nothing
happened: no final lost or repeated, positions on one timeline. `resume=NO_RESUME` turns it off.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.resume import NO_RESUME as NO_RESUME  # re-exported: SttClient(resume=NO_RESUME)
from clients.resume import AudioTape, AudioTapeGap, ResumePolicy, dropped, worth_retrying

DEFAULT_SERVER = "127.0.0.1:50051"

# Long streams sit on one HTTP/2 connection for minutes; pings keep NATs and
# proxies from dropping it while the client is between utterances, and find a
# connection that died silently (Wi-Fi gone, no reset) within ~20 s, well inside
# the server's resume window. Reconnects back off from 0.2 s to 2 s, not gRPC's
# default 1 s to 2 min: a resuming stream waits on them.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 15000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
NODE_HEADER = "stt-node"  # initial metadata: the node of a fleet that served the call

VAD_MODES = {
    "": stt_pb2.VAD_MODE_UNSPECIFIED,
    "continue": stt_pb2.VAD_MODE_CONTINUE,
    "auto": stt_pb2.VAD_MODE_AUTO_END,
}
TASKS = {
    "": stt_pb2.TASK_UNSPECIFIED,
    "transcribe": stt_pb2.TASK_TRANSCRIBE,
    "translate": stt_pb2.TASK_TRANSLATE,
}

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
    header), and `resumes`, how many times it re-attached after a dropped connection."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.resumes = 0
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


def split_pcm16(pcm16: bytes, sample_rate_hz: int, chunk_ms: float) -> list[bytes]:
    """Cut mono pcm16 into chunks of chunk_ms (the last one may be shorter)."""
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be > 0, got {chunk_ms}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    if len(pcm16) % 2:
        raise ValueError(f"pcm16 must hold whole 16-bit samples, got {len(pcm16)} bytes")
    chunk_bytes = 2 * max(1, round(sample_rate_hz * chunk_ms / 1000))
    return [pcm16[offset:offset + chunk_bytes] for offset in range(0, len(pcm16), chunk_bytes)]


def _enum_value(table: Mapping[str, int], value: str | None, field: str) -> Any:  # the stubs' enum ValueType
    key = (value or "").strip().lower()
    if key not in table:
        allowed = ", ".join(repr(name) for name in table if name)
        raise ValueError(f"{field} must be one of {allowed}, got {value!r}")
    return table[key]


def _attribute_text(value: object) -> str:
    # YAML turns `partial: true` into a bool; the server expects the text "true".
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_END = object()


class SttClient:
    """A channel to one appliance (or a fleet's balancer). Close it (or use `with`) when done.
    `resume`: how streams recover from a dropped connection (NO_RESUME: they fail instead)."""

    def __init__(self, server: str = DEFAULT_SERVER, tls: bool = False,
                 tls_ca_file: str | Path | None = None,
                 metadata: Sequence[tuple[str, str]] = (), *, timeout_sec: float | None = 30.0,
                 resume: ResumePolicy | None = None):
        self.server = server
        self._metadata = tuple(metadata)
        self._timeout_sec = timeout_sec  # unary calls only; streams run as long as the audio
        self._resume = resume or ResumePolicy()
        self._closed = False
        if tls or tls_ca_file:
            root_certificates = Path(tls_ca_file).read_bytes() if tls_ca_file else None
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(server, options=CHANNEL_OPTIONS)
        self._stub = stt_pb2_grpc.SpeechToTextStub(self._channel)

    def close(self) -> None:
        self._closed = True  # before the channel: its streams then fail CANCELLED, and must not resume
        self._channel.close()

    def __enter__(self) -> SttClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_session(self, session_id: str = "", *, vad_mode: str = "continue",
                       vad_silence_sec: float | None = None, vad_threshold: float | None = None,
                       language: str = "", task: str = "", decode_profile: str = "",
                       model_id: str = "", require_token: bool = False,
                       attributes: Mapping[str, str] | None = None) -> stt_pb2.SessionResponse:
        """CreateSession; returns the settings the server resolved. Raises SttError. While this
        client resumes streams, the session asks for checkpoints (attribute resumable=true)."""
        attributes = {str(k): _attribute_text(v) for k, v in (attributes or {}).items()}
        if self._resume.enabled:
            attributes.setdefault("resumable", "true")
        request = stt_pb2.SessionRequest(
            session_id=session_id or "",
            attributes=attributes,
            vad_mode=_enum_value(VAD_MODES, vad_mode, "vad_mode"),
            language=language or "",
            task=_enum_value(TASKS, task, "task"),
            decode_profile=decode_profile or "",
            model_id=model_id or "",
            require_token=bool(require_token),
        )
        if vad_silence_sec is not None:
            request.vad_silence_sec = float(vad_silence_sec)
        if vad_threshold is not None:
            request.vad_threshold = float(vad_threshold)
        try:
            return self._stub.CreateSession(request, metadata=self._metadata, timeout=self._timeout_sec)
        except grpc.RpcError as err:
            raise SttError.from_rpc_error(err) from err

    def stream_audio(self, session: stt_pb2.SessionResponse, pcm16: bytes, sample_rate_hz: int, *,
                     chunk_ms: float = 100, realtime: bool = True) -> ResultStream:
        """Stream mono pcm16 in chunk_ms chunks; yield results as they arrive.

        realtime=True paces chunks like a live source; False sends as fast as gRPC takes them.
        """
        chunks = split_pcm16(pcm16, sample_rate_hz, chunk_ms)
        return self.send_chunks(session, chunks, sample_rate_hz, realtime=realtime)

    def send_chunks(self, session: stt_pb2.SessionResponse, chunks: Iterable[bytes],
                    sample_rate_hz: int, *, realtime: bool = True) -> ResultStream:
        """Stream pre-cut pcm16 chunks (e.g. from a microphone); yield results as they arrive.

        The stream half-closes after the last chunk, so the server flushes the last
        utterance. Raises SttError from the iterator when the stream fails (after resuming
        has given up, when it is on). Leaving the loop early cancels the stream.
        """
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
        stream = ResultStream()
        stream._results = self._stream(session, chunks, sample_rate_hz, realtime, stream)
        return stream

    def _stream(self, session: stt_pb2.SessionResponse, chunks: Iterable[bytes], sample_rate_hz: int,
                realtime: bool, stream: ResultStream) -> Iterator[TimedResult]:
        policy = self._resume
        log = SentAudioLog()
        tape = AudioTape(sample_rate_hz, policy.max_kept_sec if policy.enabled else 0.0)
        stop = threading.Event()
        source_failure: list[BaseException] = []
        current: list[grpc.Future] = []  # the call in flight: a failing source cancels it (no half-close)

        def source_failed(err: BaseException) -> None:
            source_failure.append(err)
            for call in current:
                call.cancel()

        pacer = threading.Thread(target=_pace_chunks, name="stt-pacer", daemon=True,
                                 args=(chunks, sample_rate_hz, realtime, tape, stop, source_failed))
        pacer.start()
        merge_samples = round(sample_rate_hz * _resend_chunk_sec(policy, session.max_chunk_ms))
        token, resume_from_sec = session.session_token, 0.0
        dropped_at: float | None = None  # when the connection was lost, while re-dialing
        attempt = 0
        try:
            while True:
                call_stop = threading.Event()
                requests = _requests(session.session_id, token, tape, resume_from_sec, sample_rate_hz, log,
                                     call_stop, merge_samples)
                call = self._stub.StreamingRecognize(requests, metadata=self._metadata)
                current[:] = [call]
                if source_failure:
                    call.cancel()
                answered = False
                try:
                    for msg in call:
                        if not answered:
                            answered = True
                            _record_node(call, stream)
                        if dropped_at is not None:  # back on: a result proves the re-attachment
                            dropped_at, attempt = None, 0
                            stream.resumes += 1
                        if msg.resume_token:
                            token, resume_from_sec = msg.resume_token, msg.resume_from_sec
                            tape.trim(resume_from_sec)
                            if not msg.is_final:
                                continue  # a checkpoint: nothing for the caller
                        yield TimedResult.from_proto(msg, log.latency_sec(msg.end_sec, time.monotonic()))
                    if source_failure:  # the server ended cleanly before the cancel landed
                        raise source_failure[0]
                    return
                except grpc.RpcError as err:
                    if source_failure:
                        raise source_failure[0] from err
                    error = SttError.from_rpc_error(err)
                    now = time.monotonic()
                    if self._closed:  # the caller closed the client: its streams end here
                        raise error from err
                    if dropped_at is None:
                        if not (policy.enabled and dropped(error.code, error.status)):
                            raise error from err
                        dropped_at = now
                    elif not worth_retrying(error.code, error.status) or now - dropped_at > policy.give_up_after_sec:
                        raise error from err
                    attempt += 1
                    if stop.wait(policy.backoff_sec(attempt)):
                        return
                except AudioTapeGap as err:
                    raise SttError(f"cannot resume: {err}", code=None) from err
                finally:
                    call_stop.set()
                    call.cancel()  # no-op after a clean end; stops the stream when the caller broke off
        finally:
            stop.set()
            pacer.join(timeout=5)


def _resend_chunk_sec(policy: ResumePolicy, max_chunk_ms: int) -> float:
    """How long a resent chunk may be: the policy's, within the server's max_chunk_ms."""
    return min(policy.resend_chunk_sec, max_chunk_ms / 1000) if max_chunk_ms else policy.resend_chunk_sec


def _record_node(call: grpc.Call, stream: ResultStream) -> None:
    """Note which node served the call (its header came before the call's first answer)."""
    for key, value in call.initial_metadata() or ():
        if key == NODE_HEADER and isinstance(value, str):
            stream.nodes.append(value)


def _requests(session_id: str, token: str, tape: AudioTape, from_sec: float, sample_rate_hz: int,
              log: SentAudioLog, stop: threading.Event, merge_samples: int) -> Iterator[stt_pb2.AudioChunk]:
    """One call's chunks: the tape from `from_sec` on, the first naming the session. Runs on gRPC's
    request thread; a chunk's send time is taken when gRPC pulls it the first time it is sent."""
    first = True
    for pcm16, end_sec, first_send in tape.read(from_sec, stop, merge_samples):
        chunk = stt_pb2.AudioChunk(pcm16=pcm16, sample_rate_hz=sample_rate_hz, session_token=token)
        if first:
            chunk.session_id = session_id
            first = False
        if first_send:
            log.record(end_sec, time.monotonic())
        yield chunk
    if first:  # no audio at all: the server still needs to learn the session id
        log.record(tape.end_sec, time.monotonic())
        yield stt_pb2.AudioChunk(session_id=session_id, sample_rate_hz=sample_rate_hz, session_token=token)


def _pace_chunks(chunks: Iterable[bytes], sample_rate_hz: int, realtime: bool, tape: AudioTape,
                 stop: threading.Event, failed: Callable[[BaseException], None]) -> None:
    """Put chunks on the tape, each at its due time when realtime.

    Due times come from one monotonic start, so a late wake-up shortens the next
    wait instead of accumulating drift. Chunk k is due when its last sample would
    have been captured: a live source cannot send audio before it is spoken.
    """
    start_sec = time.monotonic()
    audio_end_sec = 0.0
    try:
        for pcm16 in chunks:
            if len(pcm16) % 2:
                raise ValueError(f"pcm16 chunk must hold whole 16-bit samples, got {len(pcm16)} bytes")
            audio_end_sec += len(pcm16) / 2 / sample_rate_hz
            if realtime:
                wait_sec = start_sec + audio_end_sec - time.monotonic()
                if wait_sec > 0 and stop.wait(wait_sec):
                    return
            if stop.is_set():
                return
            tape.append(bytes(pcm16))
    except Exception as err:  # the caller's chunk source failed: surface it, do not half-close
        failed(err)
        return
    tape.finish()
