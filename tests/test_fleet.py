"""Three appliances behind a real HAProxy (the shipped deploy/haproxy/haproxy.cfg), round robin per call.

Sessions are created on one node and streamed on another; a node SIGTERMed mid-run leaves the
rotation before it stops taking streams, and its streams carry on elsewhere (it leaves their open
utterances to the node they resume on); a node killed mid-run (kill -9) loses no final either: its
clients resume on another node. Either way every stream's finals match an uncut run's. One fleet serves the module,
in order: the SIGTERM test takes one node away, the kill test another.
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.audio import load_pcm16
from clients.corpus import wer
from clients.local_fleet import LocalFleet
from clients.sdk import NODE_HEADER, ResultStream, SttClient, TimedResult
from tests.haproxy_harness import start_fleet
from tests.helpers import assert_same_finals

DRAIN_NOTICE_SEC = 3.0  # > HAProxy's inter 1s x fall 2: the node leaves the rotation first


@pytest.fixture(scope="module")
def fleet(request) -> LocalFleet:
    return start_fleet(request, 3, env={"STT_SERVER_DRAIN_NOTICE_SEC": str(DRAIN_NOTICE_SEC)})


@pytest.fixture(scope="module")
def audio(sentences):
    return load_pcm16(sentences.path)


@pytest.fixture(scope="module")
def reference(fleet, audio) -> list[TimedResult]:
    """The three sentences' finals from one node, no balancer, no cut."""
    pcm16, rate_hz = audio
    with SttClient(fleet.nodes["node1"].address) as client:
        finals = [r for r in client.stream_audio(client.create_session(), pcm16, rate_hz, realtime=False)
                  if r.is_final]
    assert [f.utterance_index for f in finals] == [0, 1, 2]
    return finals


class LiveStream:
    """One kiosk streaming the sentences in real time through the balancer, on its own thread."""

    def __init__(self, address: str, audio):
        self._address, self._audio = address, audio
        self.finals: list[TimedResult] = []
        self.stream: ResultStream | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pcm16, rate_hz = self._audio
        try:
            with SttClient(self._address) as client:
                self.stream = client.stream_audio(client.create_session(), pcm16, rate_hz)
                self.finals = [r for r in self.stream if r.is_final]
        except BaseException as err:  # reported by the test
            self.error = err

    @property
    def node(self) -> str:
        """The node serving it now ("" before its first answer)."""
        return self.stream.nodes[-1] if self.stream is not None and self.stream.nodes else ""

    def join(self, timeout_sec: float = 90.0) -> None:
        self._thread.join(timeout=timeout_sec)
        assert not self._thread.is_alive(), "the stream did not end"
        assert self.error is None, repr(self.error)


def start_streams(fleet: LocalFleet, audio, count: int) -> list[LiveStream]:
    streams = [LiveStream(fleet.address, audio) for _ in range(count)]
    deadline = time.monotonic() + 15
    while not all(s.node for s in streams) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(s.node for s in streams), "a stream got no answer"
    return streams


def node_of_create_session(channel: grpc.Channel) -> tuple[stt_pb2.SessionResponse, str]:
    response, call = stt_pb2_grpc.SpeechToTextStub(channel).CreateSession.with_call(stt_pb2.SessionRequest())
    return response, dict(call.initial_metadata())[NODE_HEADER]


def test_round_robin_sends_create_and_stream_to_different_nodes_and_every_session_succeeds(fleet, audio, reference):
    pcm16, rate_hz = audio
    before = fleet.balancer.requests_per_server()
    with grpc.insecure_channel(fleet.address) as channel, SttClient(fleet.address) as client:
        for _ in range(3):
            session, created_on = node_of_create_session(channel)
            stream = client.stream_audio(session, pcm16, rate_hz, realtime=False)
            finals = [r for r in stream if r.is_final]
            assert stream.nodes and stream.nodes[0] != created_on  # the ticket carried the session over
            assert [f.utterance_index for f in finals] == [0, 1, 2]
            assert wer(" ".join(f.text for f in reference), " ".join(f.text for f in finals)) <= 0.1
    concurrent = [LiveStream(fleet.address, audio) for _ in range(6)]
    for live in concurrent:
        live.join()
        assert [f.utterance_index for f in live.finals] == [0, 1, 2]
    served = {name: n - before[name] for name, n in fleet.balancer.requests_per_server().items()}
    assert sum(served.values()) == 3 * 2 + 6 * 2 and min(served.values()) >= 4, served
    assert {live.node for live in concurrent} == set(fleet.nodes)


def test_a_sigtermed_node_leaves_the_rotation_first_and_its_streams_carry_on_elsewhere(fleet, audio, reference):
    streams = start_streams(fleet, audio, 3)
    time.sleep(2.5)  # into the first sentence
    victim = streams[0].node
    node = fleet.nodes[victim]
    node.process.send_signal(signal.SIGTERM)
    assert fleet.balancer.wait_for_state(victim, "DOWN", timeout_sec=DRAIN_NOTICE_SEC) < DRAIN_NOTICE_SEC
    assert node.process.poll() is None  # out of the rotation while it still serves
    with SttClient(fleet.address) as client:  # a new kiosk now: never the draining node
        pcm16, rate_hz = audio
        fresh = client.stream_audio(client.create_session(), pcm16[:len(pcm16) // 3], rate_hz, realtime=False)
        assert [r for r in fresh if r.is_final] and victim not in fresh.nodes
    for live in streams:
        live.join()
        assert_same_finals(live.finals, reference)
    moved = [live for live in streams if victim in live.stream.nodes]
    assert moved and all(live.stream.resumes >= 1 and live.stream.nodes[-1] != victim for live in moved)
    assert node.process.wait(timeout=30) == 0  # drained, exit 0


def test_a_killed_node_loses_no_final_its_clients_resume_on_another(fleet, audio, reference):
    alive = [name for name, node in fleet.nodes.items() if node.process.poll() is None]
    assert len(alive) == 2, "the SIGTERM test runs first and takes one node away"
    streams = start_streams(fleet, audio, 4)
    time.sleep(4.0)  # into the second sentence
    victim = streams[0].node
    fleet.nodes[victim].process.kill()
    for live in streams:
        live.join()
        assert_same_finals(live.finals, reference)
    moved = [live for live in streams if victim in live.stream.nodes]
    assert moved and all(live.stream.resumes == 1 and live.stream.nodes[-1] != victim for live in moved)
    assert fleet.balancer.server_states()[victim] == "DOWN"
