"""One `SttClient.send_chunks` stream: the pacer fills the audio tape, each StreamingRecognize call
reads it, and the loop re-dials after a dropped connection (resume) and, with `KeepListening`, goes
on in a new session after an idle timeout. Results reach the caller on one timeline either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator

import grpc

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.keep_listening import KeepListening, Reopen, SessionTimeline, reopens_after
from clients.results import ResultStream, SentAudioLog, SttError, TimedResult
from clients.resume import AudioTape, AudioTapeGap, ResumePolicy, dropped, worth_retrying

NODE_HEADER = "stt-node"  # initial metadata: the node of a fleet that served the call
LOG_KEPT_BEFORE_RESUME_SEC = 30.0  # send times kept from before the resume point, for latency_sec


class StreamRun:
    """The state of one stream across its calls and sessions; `results()` is what the caller iterates."""

    def __init__(self, stub: stt_pb2_grpc.SpeechToTextStub, metadata: tuple[tuple[str, str], ...],
                 policy: ResumePolicy, client_closed: Callable[[], bool], session: stt_pb2.SessionResponse,
                 sample_rate_hz: int, stream: ResultStream, keep_listening: KeepListening | None):
        self._stub, self._metadata, self._policy = stub, metadata, policy
        self._client_closed = client_closed
        self._rate = sample_rate_hz
        self._stream = stream
        self._listen = keep_listening
        kept_sec = policy.max_kept_sec if policy.enabled else 0.0
        if keep_listening is not None:
            kept_sec = max(kept_sec, keep_listening.seam_keep_sec)
        self._log = SentAudioLog()
        self._tape = AudioTape(sample_rate_hz, kept_sec)
        self._stop = threading.Event()
        self._source_failure: list[BaseException] = []
        self._current: list[grpc.Future] = []  # the call in flight: a failing source cancels it
        self._timeline = SessionTimeline(session)
        self._token, self._resume_from_sec = session.session_token, 0.0  # the resume point: stream seconds
        self._next_index = 0  # the stream's next utterance index (where a new session's count starts)
        self._dropped_at: float | None = None  # when the connection was lost, while re-dialing
        self._attempt = 0
        stream.session_ids.append(session.session_id)

    def results(self, chunks: Iterable[bytes], realtime: bool) -> Iterator[TimedResult]:
        pacer = threading.Thread(target=_pace_chunks, name="stt-pacer", daemon=True,
                                 args=(chunks, self._rate, realtime, self._tape, self._stop, self._source_failed))
        pacer.start()
        try:
            while True:
                done = yield from self._call()
                if done:
                    return
        finally:
            self._stop.set()
            pacer.join(timeout=5)

    def _source_failed(self, err: BaseException) -> None:
        self._source_failure.append(err)
        for call in self._current:
            call.cancel()

    def _call(self) -> Generator[TimedResult, None, bool]:
        """One StreamingRecognize call; returns True when the stream is over, False to call again."""
        session = self._timeline.session
        merge_samples = round(self._rate * _resend_chunk_sec(self._policy, session.max_chunk_ms))
        call_stop = threading.Event()
        requests = _requests(session.session_id, self._token, self._tape, self._resume_from_sec, self._rate,
                             self._log, call_stop, merge_samples)
        sent_before_sec = self._log.audio_sent_sec
        call = self._stub.StreamingRecognize(requests, metadata=self._metadata)
        self._current[:] = [call]
        if self._source_failure:
            call.cancel()
        try:
            answered = False
            for msg in call:
                if not answered:
                    answered = True
                    _record_node(call, self._stream)
                if self._dropped_at is not None:  # back on: a result proves the re-attachment
                    self._dropped_at, self._attempt = None, 0
                    self._stream.resumes += 1
                result = self._take(msg)
                if result is not None:
                    yield result
            if self._source_failure:  # the server ended cleanly before the cancel landed
                raise self._source_failure[0]
            return True
        except grpc.RpcError as err:
            if self._source_failure:
                raise self._source_failure[0] from err
            error = SttError.from_rpc_error(err)
            if self._client_closed():  # the caller closed the client: its streams end here
                raise error from err
            if self._listen is not None and reopens_after(error.code, self._log.audio_sent_sec > sent_before_sec):
                return not self._reopen(self._listen, error)
            return self._wait_to_redial(error, err)
        except AudioTapeGap as err:
            raise SttError(f"cannot resume: {err}", code=None) from err
        finally:
            call_stop.set()
            call.cancel()  # no-op after a clean end; stops the stream when the caller broke off

    def _take(self, msg: stt_pb2.STTResult) -> TimedResult | None:
        """The caller's result for a message (None for a checkpoint); notes the resume point it carries."""
        timeline = self._timeline
        if msg.is_final:
            self._next_index = max(self._next_index, timeline.first_index + msg.utterance_index + 1)
        if msg.resume_token:
            self._token, self._resume_from_sec = msg.resume_token, timeline.stream_sec(msg.resume_from_sec)
            self._tape.trim(self._resume_from_sec)
            # Results still to come end after the resume point, less what a speech event looks back.
            self._log.forget_before(self._resume_from_sec - LOG_KEPT_BEFORE_RESUME_SEC)
            if not msg.is_final:  # a checkpoint: nothing for the caller; it names the next utterance
                self._next_index = max(self._next_index, timeline.first_index + msg.utterance_index)
                return None
        latency_sec = self._log.latency_sec(timeline.stream_sec(msg.end_sec), time.monotonic())
        return timeline.result(TimedResult.from_proto(msg, latency_sec))

    def _wait_to_redial(self, error: SttError, err: grpc.RpcError) -> bool:
        """After a failed call: raise unless resuming may help; else back off (True: stopped meanwhile)."""
        policy, now = self._policy, time.monotonic()
        if self._dropped_at is None:
            if not (policy.enabled and dropped(error.code, error.status)):
                raise error from err
            self._dropped_at = now
        elif not worth_retrying(error.code, error.status) or now - self._dropped_at > policy.give_up_after_sec:
            raise error from err
        self._attempt += 1
        return self._stop.wait(policy.backoff_sec(self._attempt))

    def _open_next(self, listen: KeepListening) -> stt_pb2.SessionResponse | None:
        """The next session; failures a later try may get past (the connection down, a node at capacity
        or draining) are retried with the resume policy's backoff for up to its give_up_after_sec, so a
        kiosk outlives a server restart at the seam. None: the stream was stopped meanwhile."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                return listen.open_session()
            except SttError as error:
                attempt += 1
                if (self._client_closed() or not worth_retrying(error.code, error.status)
                        or time.monotonic() - started > self._policy.give_up_after_sec):
                    raise
            if self._stop.wait(self._policy.backoff_sec(attempt)):
                return None

    def _reopen(self, listen: KeepListening, error: SttError) -> bool:
        """The old session ended idle: go on in a new one, from the seam (see clients.keep_listening).
        False when the stream was stopped before a new session opened."""
        seam_sec = max(self._resume_from_sec, self._tape.kept_from_sec)
        session = self._open_next(listen)
        if session is None:
            return False
        previous = self._timeline.session.session_id
        self._timeline = SessionTimeline(session, offset_sec=seam_sec, first_index=self._next_index)
        self._token, self._resume_from_sec = session.session_token, seam_sec
        self._dropped_at, self._attempt = None, 0
        self._stream.reopens += 1
        self._stream.session_ids.append(session.session_id)
        if listen.on_reopen is not None:
            listen.on_reopen(Reopen(previous, session.session_id, seam_sec, self._stream.reopens, error.message))
        return True


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
