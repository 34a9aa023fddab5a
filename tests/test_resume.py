"""Streams that survive a dropped connection: real appliances, the real SDK, a proxy that cuts.

The client streams three spoken sentences in real time through `CuttableProxy`; the proxy drops the
connection mid-utterance or between utterances. The SDK re-dials and re-attaches with its latest
resume ticket, to the same appliance or (sharing the ticket secret) another one. Its finals must
match the uncut run's: every utterance index once, in order, at the same timeline positions, with
the same words (within a WER bound: the resumed utterance is decoded again from resent audio).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.audio import load_pcm16
from clients.sdk import NO_RESUME, ResultStream, SttClient, SttError, TimedResult, split_pcm16
from tests.conftest import serve_in_process
from tests.helpers import assert_same_finals
from tests.tcp_cut import CuttableProxy

SECRET = "resume-tests-shared-secret"
B_WINDOW_SEC = 3.0


@pytest.fixture(scope="module")
def node_a(request):
    return serve_in_process(request, env={"STT_AUTH_SESSION_TICKET_SECRET": SECRET, "STT_SERVER_NODE_NAME": "node-a"})


@pytest.fixture(scope="module")
def node_b(request):
    return serve_in_process(request, env={"STT_AUTH_SESSION_TICKET_SECRET": SECRET, "STT_SERVER_NODE_NAME": "node-b",
                                          "STT_SERVER_RESUME_WINDOW_SEC": str(B_WINDOW_SEC)})


@pytest.fixture(scope="module")
def audio(sentences):
    return load_pcm16(sentences.path)


@pytest.fixture(scope="module")
def uncut(node_a, audio):
    """The reference: the same stream, through the proxy, never cut."""
    with CuttableProxy(node_a.address) as proxy:
        finals, stream = stream_through(proxy, audio)
    assert [f.utterance_index for f in finals] == [0, 1, 2] and stream.resumes == 0
    return finals


def stream_through(proxy: CuttableProxy, audio, cut_at_sec: float | None = None,
                   after_cut: Callable[[CuttableProxy], None] = lambda proxy: None
                   ) -> tuple[list[TimedResult], ResultStream]:
    """Stream `audio` in real time through `proxy`, cutting it `cut_at_sec` into the stream."""
    pcm16, rate_hz = audio
    with SttClient(proxy.address) as client:
        session = client.create_session()
        stream = client.stream_audio(session, pcm16, rate_hz, chunk_ms=100)
        timer = None
        if cut_at_sec is not None:
            def cut() -> None:
                assert proxy.cut() >= 1, "the proxy had no connection to cut"
                after_cut(proxy)
            timer = threading.Timer(cut_at_sec, cut)
            timer.start()
        try:
            finals = [r for r in stream if r.is_final]
        finally:
            if timer is not None:
                timer.cancel()
    return finals, stream


def mid_utterance(uncut: list[TimedResult], index: int) -> float:
    return (uncut[index].start_sec + uncut[index].end_sec) / 2


def test_a_cut_mid_utterance_loses_and_repeats_nothing(node_a, audio, uncut):
    with CuttableProxy(node_a.address) as proxy:
        finals, stream = stream_through(proxy, audio, cut_at_sec=mid_utterance(uncut, 1))
        assert proxy.cuts == 1 and proxy.connections >= 2
    assert stream.resumes == 1 and stream.nodes == ["node-a", "node-a"]
    assert_same_finals(finals, uncut)


def test_a_cut_between_utterances_loses_and_repeats_nothing(node_a, audio, uncut):
    between = (uncut[0].end_sec + uncut[1].start_sec) / 2
    with CuttableProxy(node_a.address) as proxy:
        finals, stream = stream_through(proxy, audio, cut_at_sec=between)
    assert stream.resumes == 1
    assert_same_finals(finals, uncut)


def test_a_stream_resumes_on_another_node_sharing_the_secret(node_a, node_b, audio, uncut):
    with CuttableProxy(node_a.address) as proxy:
        finals, stream = stream_through(proxy, audio, cut_at_sec=mid_utterance(uncut, 1),
                                        after_cut=lambda proxy: proxy.retarget(node_b.address))
    assert stream.resumes == 1 and stream.nodes == ["node-a", "node-b"]
    assert_same_finals(finals, uncut)


def test_a_resume_after_the_window_is_refused_with_a_code(node_b, audio, uncut):
    """Node b's resume tickets last 3 s; the link stays down longer than that."""
    with CuttableProxy(node_b.address) as proxy, pytest.raises(SttError) as refused:
        stream_through(proxy, audio, cut_at_sec=mid_utterance(uncut, 1),
                       after_cut=lambda proxy: proxy.refuse(B_WINDOW_SEC + 2.5))
    assert refused.value.code == "ERR1005" and "resume_window_sec" in refused.value.message, (
        refused.value, proxy.errors)


def test_a_resume_ticket_takes_over_a_session_still_streaming_here_and_a_creation_ticket_does_not(node_a, audio):
    """The server may not have noticed the old connection die when the client comes back: the
    resume ticket ends the old call (ERR1002, should its client still be there) and the new one
    carries on; the creation ticket,
    which anyone who saw CreateSession's answer holds, cannot do that (ERR1002)."""
    pcm16, rate_hz = audio
    with SttClient(node_a.address) as client:
        session = client.create_session()
    old_open = threading.Event()
    channels = [grpc.insecure_channel(node_a.address) for _ in range(3)]
    try:
        stubs = [stt_pb2_grpc.SpeechToTextStub(channel) for channel in channels]

        def old_chunks():
            yield stt_pb2.AudioChunk(session_id=session.session_id, session_token=session.session_token,
                                     pcm16=pcm16[:rate_hz * 2], sample_rate_hz=rate_hz)
            old_open.wait(timeout=30)  # the old client never half-closes: its link is "gone"

        old = stubs[0].StreamingRecognize(old_chunks())
        checkpoint = next(old)
        assert checkpoint.resume_token and not checkpoint.is_final and checkpoint.resume_from_sec == 0.0

        def chunks_from(token: str) -> list[stt_pb2.AudioChunk]:
            pieces = split_pcm16(pcm16, rate_hz, 1000)
            return [stt_pb2.AudioChunk(session_id=session.session_id if i == 0 else "", session_token=token,
                                       pcm16=piece, sample_rate_hz=rate_hz) for i, piece in enumerate(pieces)]

        with pytest.raises(grpc.RpcError) as twice:
            list(stubs[1].StreamingRecognize(iter(chunks_from(session.session_token))))
        assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS and twice.value.details().startswith("ERR1002")
        resumed = list(stubs[2].StreamingRecognize(iter(chunks_from(checkpoint.resume_token))))
        assert [r.utterance_index for r in resumed if r.is_final] == [0, 1, 2]
        with pytest.raises(grpc.RpcError) as taken_over:
            list(old)
        assert taken_over.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert taken_over.value.details().startswith("ERR1002") and "resumed on another connection" in \
            taken_over.value.details()
    finally:
        old_open.set()
        for channel in channels:
            channel.close()


def test_create_session_gets_through_a_link_that_turns_connections_away_for_a_second(node_a):
    """The SDK asks again for a session while no server has answered (gRPC's retry policy, then the
    SDK's own tries for CONNECT_WAIT_SEC): a kiosk that starts while the link or the box is still
    coming up gets its session."""
    with CuttableProxy(node_a.address) as proxy:
        proxy.refuse(1.0)
        with SttClient(proxy.address) as client:
            session = client.create_session()
        assert session.session_id and proxy.connections == 1, proxy.errors
        # Down for longer than the policy's attempts: a clear error, soon. (Cut first: gRPC shares a
        # connected subchannel between channels to the same address.)
        proxy.refuse(30.0)
        proxy.cut()
        started = time.monotonic()
        with SttClient(proxy.address) as client, pytest.raises(SttError) as refused:
            client.create_session()
        assert refused.value.status == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 10


def test_a_ticket_from_a_node_with_another_secret_is_an_unknown_session(node_a, appliance_server):
    with SttClient(appliance_server.address) as client:  # its secret is random per boot
        session = client.create_session()
    with SttClient(node_a.address, resume=NO_RESUME) as client, pytest.raises(SttError) as refused:
        list(client.send_chunks(session, [b"\x00\x00" * 1600], 16_000, realtime=False))
    assert refused.value.code == "ERR1001"
