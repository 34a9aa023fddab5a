"""Tickets live and die with their session: a real appliance, raw gRPC calls on 127.0.0.1 (some
through a proxy that cuts the connection), and an honest kiosk on ::1 that must be served meanwhile.

A session whose stream ended (its client half-closed and got its finals, or an error ended it)
refuses its CreateSession ticket and every resume token (ERR1005); only a lost connection leaves it
resumable, for server.resume_window_sec. A resume never rewinds the timeline: a token older than
results already delivered is refused, and a final that may have been lost in flight comes again
only as the copy first sent.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.session_timeline import IN_FLIGHT_SEC
from clients.audio import load_pcm16
from clients.sdk import SttClient
from tests.adversarial.victim import HonestStream, ipv6_loopback_or_skip
from tests.conftest import serve_in_process
from tests.tcp_cut import CuttableProxy

WINDOW_SEC = 4.0
CHUNK_SEC = 0.1


@pytest.fixture(scope="module")
def server(request):
    return serve_in_process(request, "--grpc-host", "::")


@pytest.fixture(scope="module")
def brief_window(request):
    """Resume tickets and lost sessions here last WINDOW_SEC."""
    return serve_in_process(request, env={"STT_SERVER_RESUME_WINDOW_SEC": str(WINDOW_SEC)})


@pytest.fixture(scope="module")
def audio(sentences):
    return load_pcm16(sentences.path)


@pytest.fixture
def kiosk(server, sentences):
    """The honest client on ::1, streaming three sentences at real time through each test."""
    ipv6_loopback_or_skip()
    with HonestStream(f"[::1]:{server.port}", sentences) as honest:
        yield honest
    honest.assert_served()


def create(server, resumable: bool = False) -> stt_pb2.SessionResponse:
    with SttClient(server.address) as client:
        return client.create_session(attributes={"resumable": "true"} if resumable else {})


def chunks(session_id: str, token: str, audio, *, from_sec: float = 0.0, realtime: bool = False,
           hold: threading.Event | None = None) -> Iterator[stt_pb2.AudioChunk]:
    """The audio from `from_sec` in 100 ms chunks, the first naming the session. With `hold` the call
    never half-closes (its client is "still there" until the link goes)."""
    pcm16, rate_hz = audio
    step = round(CHUNK_SEC * rate_hz) * 2
    started = time.monotonic()
    for i, offset in enumerate(range(round(from_sec * rate_hz) * 2, len(pcm16), step)):
        if realtime and hold is not None and hold.wait(max(0.0, started + i * CHUNK_SEC - time.monotonic())):
            return
        yield stt_pb2.AudioChunk(session_id=session_id if i == 0 else "", session_token=token,
                                 pcm16=pcm16[offset:offset + step], sample_rate_hz=rate_hz)
    if hold is not None:
        hold.wait(120)


def stream(address: str, session_id: str, token: str, audio, from_sec: float = 0.0) -> list[stt_pb2.STTResult]:
    """A whole call: the audio from `from_sec` as fast as it goes, half-closed, every result."""
    with grpc.insecure_channel(address) as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(
            chunks(session_id, token, audio, from_sec=from_sec), timeout=120)
        return list(call)


def refusal(address: str, session_id: str, token: str, audio) -> grpc.RpcError:
    """Attach with `token`: the error the call ends with (having sent no result)."""
    results: list = []
    with pytest.raises(grpc.RpcError) as info:
        results.extend(stream(address, session_id, token, audio))
    assert results == []
    return info.value


def assert_ticket_refused(error: grpc.RpcError, *words: str) -> None:
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error.details().startswith("ERR1005"), error
    assert all(word in error.details() for word in words), error.details()


def finals(results) -> list:
    return [r for r in results if r.is_final]


class CutCall:
    """One call through `proxy` at real time that never half-closes; results are read on a thread
    with when each came, until the proxy cuts the connection."""

    def __init__(self, proxy: CuttableProxy, session: stt_pb2.SessionResponse, audio):
        self.received: list[tuple[float, stt_pb2.STTResult]] = []
        self._hold = threading.Event()
        self._channel = grpc.insecure_channel(proxy.address)
        self._call = stt_pb2_grpc.SpeechToTextStub(self._channel).StreamingRecognize(
            chunks(session.session_id, session.session_token, audio, realtime=True, hold=self._hold), timeout=120)
        self.error: grpc.RpcError | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for msg in self._call:
                self.received.append((time.monotonic(), msg))
        except grpc.RpcError as err:
            self.error = err

    def final_at(self, index: int) -> float | None:
        return next((at for at, r in self.received if r.is_final and r.utterance_index == index), None)

    def wait_until(self, condition: Callable[[], bool], timeout_sec: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_sec
        while not condition():
            assert time.monotonic() < deadline and self._reader.is_alive(), (self.error, self.received)
            time.sleep(0.05)

    def cut(self, proxy: CuttableProxy) -> list[stt_pb2.STTResult]:
        """Drop the connection (the client never ended the stream); what the client had received."""
        assert proxy.cut() >= 1
        self._reader.join(timeout=30)
        self._hold.set()
        self._channel.close()
        assert self.error is not None and self.error.code() == grpc.StatusCode.UNAVAILABLE, self.error
        return [r for _, r in self.received]


def sessions(server) -> dict:
    """The session counts of /metrics.json (the session table's)."""
    with urllib.request.urlopen(server.http_url + "/metrics.json", timeout=10) as reply:
        return json.loads(reply.read())["sessions"]


def latest_token(results) -> tuple[str, float]:
    last = [r for r in results if r.resume_token][-1]
    return last.resume_token, last.resume_from_sec


def test_after_a_normal_end_its_creation_ticket_and_every_resume_token_are_refused(server, audio, kiosk):
    session = create(server)
    results = stream(server.address, session.session_id, session.session_token, audio)
    assert [f.utterance_index for f in finals(results)] == [0, 1, 2]
    for token in (session.session_token, finals(results)[-1].resume_token, finals(results)[0].resume_token):
        assert_ticket_refused(refusal(server.address, session.session_id, token, audio), "has ended")
    # An error ends a session too: a second chunk naming another session (ERR1003).
    failed = create(server)
    bad = [stt_pb2.AudioChunk(session_id=failed.session_id, session_token=failed.session_token),
           stt_pb2.AudioChunk(session_id="someone-else", pcm16=b"\0\0" * 1600, sample_rate_hz=16_000)]
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as ended:
        list(stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(iter(bad), timeout=30))
    assert ended.value.details().startswith("ERR1003")
    assert_ticket_refused(refusal(server.address, failed.session_id, failed.session_token, audio), "has ended")


def test_after_a_dropped_connection_it_resumes_within_the_window_and_not_after(server, brief_window, audio, kiosk):
    with CuttableProxy(server.address) as proxy:
        session = create(server)
        call = CutCall(proxy, session, audio)
        call.wait_until(lambda: call.final_at(0) is not None)
        before = call.cut(proxy)
        token, from_sec = latest_token(before)
        after = stream(server.address, session.session_id, token, audio, from_sec)  # within the window
        assert [f.utterance_index for f in finals(before) + finals(after)] == [0, 1, 2]
        assert_ticket_refused(refusal(server.address, session.session_id, latest_token(after)[0], audio),
                              "has ended")  # and it ended normally this time

    with CuttableProxy(brief_window.address) as proxy:
        late = create(brief_window)
        call = CutCall(proxy, late, audio)
        call.wait_until(lambda: call.final_at(0) is not None)
        token, _ = latest_token(call.cut(proxy))
        deadline = time.monotonic() + WINDOW_SEC / 2
        while sessions(brief_window)["resumable"] != 1:  # the server noticed the link go
            assert time.monotonic() < deadline, sessions(brief_window)
            time.sleep(0.05)
        assert sessions(brief_window)["active"] == 0  # a session waiting for its client holds no cap
        time.sleep(WINDOW_SEC + 1.0)
        assert sessions(brief_window)["resumable"] == 0
    for stale in (token, late.session_token):  # the creation ticket itself lasts longer than the window
        assert_ticket_refused(refusal(brief_window.address, late.session_id, stale, audio), "resume_window_sec")


def test_a_connection_lost_with_nothing_left_to_decode_leaves_the_session_resumable(brief_window):
    """gRPC hands the server a lost connection as the end of the request stream, the same as a
    half-close, and cancels the call a moment later. A stream with nothing left to decode (only silence
    so far) used to finish in that moment and end its session; its client's resume was then refused."""
    silence = (bytes(2 * 16000 * 3), 16000)
    for attempt in range(4):
        with CuttableProxy(brief_window.address) as proxy:
            session = create(brief_window)
            call = CutCall(proxy, session, silence)
            call.wait_until(lambda call=call: bool(call.received))  # attached: the checkpoint came
            time.sleep(0.3)
            call.cut(proxy)
        deadline = time.monotonic() + WINDOW_SEC / 2
        while sessions(brief_window)["active"] != 0:
            assert time.monotonic() < deadline, sessions(brief_window)
            time.sleep(0.05)
        assert sessions(brief_window)["resumable"] == 1, (attempt, sessions(brief_window))
        resumed = stream(brief_window.address, session.session_id, session.session_token, silence)
        assert resumed and not finals(resumed), attempt  # attached again; silence has no finals


def test_an_old_resume_token_after_later_finals_is_refused_and_the_latest_repeats_nothing(server, audio, kiosk):
    with CuttableProxy(server.address) as proxy:
        session = create(server, resumable=True)
        call = CutCall(proxy, session, audio)
        # Audio went on arriving well past the in-flight margin after final 0 went out.
        call.wait_until(lambda: call.final_at(1) is not None and time.monotonic() - (call.final_at(0) or 0.0) >
                        IN_FLIGHT_SEC + 1)
        before = call.cut(proxy)
    first_checkpoint = before[0]
    assert not first_checkpoint.is_final and not first_checkpoint.text  # the checkpoint on attach
    assert first_checkpoint.resume_from_sec == 0.0 and first_checkpoint.resume_token
    for old in (first_checkpoint.resume_token, session.session_token):
        assert_ticket_refused(refusal(server.address, session.session_id, old, audio), "already delivered")
    token, from_sec = latest_token(before)
    after = stream(server.address, session.session_id, token, audio, from_sec)
    assert [f.utterance_index for f in finals(before) + finals(after)] == [0, 1, 2]  # none again, none lost


def test_a_final_lost_in_flight_comes_again_exactly_as_first_sent(server, audio, kiosk):
    with CuttableProxy(server.address) as proxy:
        session = create(server)
        call = CutCall(proxy, session, audio)
        call.wait_until(lambda: call.final_at(1) is not None)
        before = call.cut(proxy)  # at once: final 1 may not have reached a client
    first_sent = finals(before)
    assert [f.utterance_index for f in first_sent] == [0, 1]
    # The client never saw final 1: it resumes with final 0's token, from before utterance 1.
    after = finals(stream(server.address, session.session_id, first_sent[0].resume_token, audio,
                          first_sent[0].resume_from_sec))
    assert [f.utterance_index for f in after] == [1, 2]
    again, original = after[0], first_sent[1]
    assert (again.text, again.start_sec, again.end_sec, list(again.words)) == \
        (original.text, original.start_sec, original.end_sec, list(original.words))
    assert again.resume_token and again.resume_token != original.resume_token
