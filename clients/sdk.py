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

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from appliance.api import stt_pb2, stt_pb2_grpc

# Re-exported: callers import everything from here.
from clients.keep_listening import KeepListening as KeepListening
from clients.keep_listening import Reopen as Reopen
from clients.results import SPEECH_EVENTS as SPEECH_EVENTS
from clients.results import ResultStream as ResultStream
from clients.results import SentAudioLog as SentAudioLog
from clients.results import SttError as SttError
from clients.results import TimedResult as TimedResult
from clients.results import Word as Word
from clients.resume import NO_RESUME as NO_RESUME
from clients.resume import ResumePolicy
from clients.stream_run import NODE_HEADER as NODE_HEADER
from clients.stream_run import StreamRun

DEFAULT_SERVER = "127.0.0.1:50051"

# Long streams sit on one HTTP/2 connection for minutes; pings keep NATs and
# proxies from dropping it while the client is between utterances, and find a
# connection that died silently (Wi-Fi gone, no reset) within ~20 s, well inside
# the server's resume window. Reconnects back off from 0.2 s to 2 s, not gRPC's
# default 1 s to 2 min: a resuming stream waits on them.
#
# CreateSession is tried again while no server has answered it (UNAVAILABLE, and no response header:
# a box restarting, a link coming back, a handshake that timed out), for up to CONNECT_WAIT_SEC. gRPC's
# own retry policy makes the quick tries; its backoff is jittered, so they can all be spent within half
# a second, and the SDK keeps trying after them. Every answer a server gives starts with its stt-node
# header, so a request a server took is never sent again, and no session is created twice. Streams
# recover through resume instead.
CONNECT_WAIT_SEC = 3.0
_CONNECT_RETRY_PAUSE_SEC = 0.25
_CREATE_SESSION_RETRY = json.dumps({"methodConfig": [{
    "name": [{"service": stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name, "method": "CreateSession"}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.3s", "maxBackoff": "2s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]},
}]})
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.keepalive_time_ms", 15000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _CREATE_SESSION_RETRY),
)

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


def _answered(err: grpc.RpcError) -> bool:
    """Whether a server took the call: it answered with something other than UNAVAILABLE, or its
    response headers (which always carry stt-node) arrived."""
    status = err.code() if hasattr(err, "code") else None
    headers = (err.initial_metadata() if hasattr(err, "initial_metadata") else None) or ()
    return status != grpc.StatusCode.UNAVAILABLE or any(key == NODE_HEADER for key, _ in headers)


def _attribute_text(value: object) -> str:
    # YAML turns `partial: true` into a bool; the server expects the text "true".
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


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
        give_up_at = time.monotonic() + min(CONNECT_WAIT_SEC, self._timeout_sec or CONNECT_WAIT_SEC)
        while True:
            try:
                return self._stub.CreateSession(request, metadata=self._metadata, timeout=self._timeout_sec)
            except grpc.RpcError as err:
                if _answered(err) or time.monotonic() >= give_up_at:
                    raise SttError.from_rpc_error(err) from err
            time.sleep(_CONNECT_RETRY_PAUSE_SEC)

    def stream_audio(self, session: stt_pb2.SessionResponse, pcm16: bytes, sample_rate_hz: int, *,
                     chunk_ms: float = 100, realtime: bool = True) -> ResultStream:
        """Stream mono pcm16 in chunk_ms chunks; yield results as they arrive.

        realtime=True paces chunks like a live source; False sends as fast as gRPC takes them.
        """
        chunks = split_pcm16(pcm16, sample_rate_hz, chunk_ms)
        return self.send_chunks(session, chunks, sample_rate_hz, realtime=realtime)

    def send_chunks(self, session: stt_pb2.SessionResponse, chunks: Iterable[bytes],
                    sample_rate_hz: int, *, realtime: bool = True,
                    keep_listening: KeepListening | None = None) -> ResultStream:
        """Stream pre-cut pcm16 chunks (e.g. from a microphone); yield results as they arrive.

        The stream half-closes after the last chunk, so the server flushes the last
        utterance. Raises SttError from the iterator when the stream fails (after resuming
        has given up, when it is on). Leaving the loop early cancels the stream.
        `keep_listening`: when the server ends the stream for want of speech (ERR1012), go on in
        the next session instead of failing (clients.keep_listening).
        """
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
        stream = ResultStream()
        run = StreamRun(self._stub, self._metadata, self._resume, lambda: self._closed, session, sample_rate_hz,
                        stream, keep_listening)
        stream._results = run.results(chunks, realtime)
        return stream
