"""The gRPC door: one host (127.0.0.1) opening StreamingRecognize calls and never sending a chunk is
held to its share of the open calls, which is below the box's, so a kiosk on ::1 still streams to its
final; and the calls' slots come back when they end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from tests.adversarial.victim import assert_transcribes, ipv6_loopback_or_skip
from tests.conftest import serve_in_process

MAX_OPEN_STREAMS = 4
SHARE = MAX_OPEN_STREAMS - 1  # max_sessions_per_ip (16) is held below the door's total


@pytest.fixture(scope="module")
def server(request):
    """Dual stack (the kiosk comes from ::1); calls that send nothing are not timed out during the test."""
    return serve_in_process(request, "--grpc-host", "::", env={
        "STT_SERVER_MAX_OPEN_STREAMS": str(MAX_OPEN_STREAMS), "STT_SERVER_MAX_SESSIONS_PER_IP": "16",
        "STT_SERVER_FIRST_CHUNK_TIMEOUT_SEC": "60", "STT_HTTP_RATE_LIMIT_RPS": "0"})


class SilentCall:
    """A StreamingRecognize call from 127.0.0.1 that sends nothing until `end`."""

    def __init__(self, address: str):
        self._release = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self.outcome: tuple[grpc.StatusCode, str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _silence(self) -> Iterator[stt_pb2.AudioChunk]:
        self._release.wait(60)
        return
        yield  # a generator that half-closes without a chunk once released

    def _run(self) -> None:
        call = stt_pb2_grpc.SpeechToTextStub(self._channel).StreamingRecognize(self._silence(), timeout=90)
        try:
            for _ in call:
                pass
            self.outcome = (grpc.StatusCode.OK, "")
        except grpc.RpcError as err:
            self.outcome = (err.code(), err.details() or "")

    def wait(self, timeout_sec: float) -> tuple[grpc.StatusCode, str] | None:
        self._thread.join(timeout_sec)
        return self.outcome

    def end(self) -> None:
        self._release.set()
        self._thread.join(30)
        self._channel.close()


def test_one_host_holding_its_share_of_open_calls_cannot_stop_a_kiosk_streaming(server, front_center_wav):
    ipv6_loopback_or_skip()
    held = [SilentCall(server.address) for _ in range(SHARE)]
    time.sleep(1.0)  # each is open and admitted (none has ended)
    over_share = SilentCall(server.address)
    try:
        refused = over_share.wait(30)
        assert refused is not None and refused[0] == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
        assert refused[1].startswith("ERR1007") and f"server.max_sessions_per_ip={SHARE}" in refused[1], refused
        assert all(call.outcome is None for call in held), [call.outcome for call in held]  # still held
        assert_transcribes(f"[::1]:{server.port}", front_center_wav)  # the kiosk: a session, a stream, its final
        assert all(call.outcome is None for call in held), [call.outcome for call in held]
    finally:
        for call in held:
            call.end()
        over_share.end()
    assert [call.outcome for call in held] == [(grpc.StatusCode.OK, "")] * SHARE  # half-closed without a chunk
    # Their slots came back when they ended: the same host streams again.
    assert_transcribes(server.address, front_center_wav)
