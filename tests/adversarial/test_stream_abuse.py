"""Clients that would take the box down: decode bombs and absurd options, silent and empty streams,
calls that never send, floods of tiny chunks, cancels at every point, late streams during drain and
bytes that are not protobuf. Each is refused with its code while an honest kiosk speaking at the
same time gets every final on time, and nothing stays held afterwards."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.runtime import Runtime
from appliance.streaming.types import AudioIn
from clients.audio import load_pcm16
from clients.sdk import SttClient
from tests.adversarial.victim import HonestStream, assert_transcribes, ipv6_loopback_or_skip
from tests.conftest import expect_error, serve_in_process

SESSION_TIMEOUT_SEC = 3.0
FIRST_CHUNK_TIMEOUT_SEC = 1.5
SILENCE_100MS = b"\0\0" * 1600


@pytest.fixture(scope="module")
def server(request):
    """Short idle limits so the reaping paths run in seconds; the kiosk connects over ::1."""
    return serve_in_process(request, "--grpc-host", "::", env={
        "STT_SERVER_SESSION_TIMEOUT_SEC": str(SESSION_TIMEOUT_SEC),
        "STT_SERVER_FIRST_CHUNK_TIMEOUT_SEC": str(FIRST_CHUNK_TIMEOUT_SEC),
        "STT_SERVER_MAX_SESSIONS_PER_IP": "6", "STT_HTTP_RATE_LIMIT_RPS": "0"})


def kiosk_address(server) -> str:
    ipv6_loopback_or_skip()
    return f"[::1]:{server.port}"


def levels(server) -> dict:
    with urllib.request.urlopen(server.http_url + "/metrics.json", timeout=10) as reply:
        return json.loads(reply.read())


def held(server) -> dict[str, int]:
    """What a finished stream must have given back."""
    snapshot = levels(server)
    return {"sessions": snapshot["sessions"]["active"], "streaming": snapshot["sessions"]["streaming"],
            "client_ips": snapshot["sessions"]["client_ips"], "vad": snapshot["vad_pool"]["in_use"],
            "buffered_bytes": snapshot["buffers"]["total_bytes"]}


def wait_released(server, timeout_sec: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_sec
    while (now := held(server)) != dict.fromkeys(now, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


Outcome = tuple[grpc.StatusCode, str, float]


def raw_stream(address: str, chunks: Iterator[stt_pb2.AudioChunk], timeout_sec: float = 30) -> Outcome:
    """Run one StreamingRecognize with hand-made chunks: (status, details, seconds it took)."""
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(chunks, timeout=timeout_sec)
        try:
            for _ in call:
                pass
        except grpc.RpcError as err:
            return err.code(), err.details() or "", time.monotonic() - started
    return grpc.StatusCode.OK, "", time.monotonic() - started


def session(address: str) -> stt_pb2.SessionResponse:
    with SttClient(address) as client:
        return client.create_session()


def paced(first: stt_pb2.AudioChunk, pcm16: bytes, every_sec: float, seconds: float) -> Iterator[stt_pb2.AudioChunk]:
    yield first
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every_sec)
        yield stt_pb2.AudioChunk(pcm16=pcm16, sample_rate_hz=16_000)


BOMBS = [
    {"decode.temperature": ",".join(f"{i / 39:.3f}" for i in range(40)), "decode.log_prob_threshold": "0"},
    {"decode.temperature": "0,0.2,0.4,0.6,0.8,1", "decode.best_of": "5", "decode.log_prob_threshold": "0"},
    {"decode.beam_size": "1000"},
    {"decode.best_of": "99999999999999999999"},
    {"decode.initial_prompt": "x" * 5000},
    {"decode.initial_prompt": "\u6f22\u5b57" * 400, "decode.hotwords": "kiosk"},  # few characters, many tokens
    {"decode.temperature": "[" * 200 + "]" * 200},
    {"decode.beam_size": "&a [*a, *a, *a]"},
    {f"k{i}": "v" for i in range(100)},
]


def test_decode_bombs_and_absurd_options_are_refused_and_health_stays_serving(server, sentences):
    with HonestStream(kiosk_address(server), sentences) as kiosk, SttClient(server.address) as attacker:
        refusals = [expect_error(lambda a=attributes: attacker.create_session(attributes=a)) for attributes in BOMBS]
        refusals += [expect_error(lambda: attacker.create_session(language="de")),  # the model is English-only
                     expect_error(lambda: attacker.create_session(language="klingon")),
                     expect_error(lambda: attacker.create_session(task="translate"))]
    assert [r.code for r in refusals] == ["ERR1010"] * len(refusals), [r.message for r in refusals]
    assert all(len(r.message) < 500 for r in refusals)
    kiosk.assert_served()
    with urllib.request.urlopen(server.http_url + "/health", timeout=10) as reply:
        assert reply.status == 200
    assert levels(server)["health"] == "ok"


@pytest.mark.parametrize("what", ["digital silence", "empty chunks"])
def test_a_stream_that_never_speaks_is_reaped_after_the_session_timeout(server, sentences, what):
    attack = session(server.address)
    first = stt_pb2.AudioChunk(session_id=attack.session_id, session_token=attack.session_token)
    pcm16 = SILENCE_100MS if what == "digital silence" else b""
    with HonestStream(kiosk_address(server), sentences) as kiosk:
        code, details, took_sec = raw_stream(server.address, paced(first, pcm16, 0.1, 30.0))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and details.startswith("ERR1012"), details
    assert "no speech" in details and SESSION_TIMEOUT_SEC <= took_sec < SESSION_TIMEOUT_SEC + 3
    kiosk.assert_served()
    assert wait_released(server) == dict.fromkeys(held(server), 0)


def test_calls_that_never_send_are_capped_per_host_and_timed_out(server, front_center_wav):
    gate = threading.Event()

    def never() -> Iterator[stt_pb2.AudioChunk]:
        gate.wait(30)
        return
        yield  # a generator that sends nothing until released

    outcomes: list[Outcome] = []
    silent = [threading.Thread(target=lambda: outcomes.append(raw_stream(server.address, never()))) for _ in range(6)]
    for thread in silent:
        thread.start()
    time.sleep(0.3)
    over_cap = raw_stream(server.address, never())  # the 7th from this host, while six are open
    assert_transcribes(kiosk_address(server), front_center_wav)  # another host is served meanwhile
    for thread in silent:
        thread.join(timeout=30)
    gate.set()
    assert over_cap[0] == grpc.StatusCode.RESOURCE_EXHAUSTED and over_cap[1].startswith("ERR1007"), over_cap
    timed_out = (grpc.StatusCode.DEADLINE_EXCEEDED, "ERR1012")
    assert [(code, details[:7]) for code, details, _ in outcomes] == [timed_out] * 6
    assert all(took < FIRST_CHUNK_TIMEOUT_SEC + 2 for _, _, took in outcomes)
    assert levels(server)["sessions"]["streaming"] == 0


def test_a_flood_of_one_sample_chunks_is_paced_and_the_kiosk_is_served_on_time(server, sentences):
    attack = session(server.address)
    first = stt_pb2.AudioChunk(session_id=attack.session_id, session_token=attack.session_token)
    stop = time.monotonic() + 8.0

    def flood() -> Iterator[stt_pb2.AudioChunk]:
        yield first
        while time.monotonic() < stop:
            yield stt_pb2.AudioChunk(pcm16=b"\x01\x00", sample_rate_hz=16_000)

    with HonestStream(kiosk_address(server), sentences) as kiosk:
        code, details, _ = raw_stream(server.address, flood(), timeout_sec=60)
    # paced to server.max_chunks_per_sec, the flood carries no speech and is reaped like any silent stream
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and details.startswith("ERR1012"), details
    kiosk.assert_served()


@pytest.mark.parametrize("when", ["before the first chunk", "after the first chunk", "mid-utterance",
                                  "while the final decodes"])
def test_a_cancel_at_any_point_gives_everything_back_at_once(server, front_center_wav, when):
    pcm16, _ = load_pcm16(front_center_wav)
    attack = session(server.address)
    first = stt_pb2.AudioChunk(session_id=attack.session_id, session_token=attack.session_token)
    sent = threading.Event()

    def chunks() -> Iterator[stt_pb2.AudioChunk]:
        if when != "before the first chunk":
            yield first
        if when in ("mid-utterance", "while the final decodes"):
            cut = len(pcm16) // 2 if when == "mid-utterance" else len(pcm16)
            for offset in range(0, cut, 3200):
                yield stt_pb2.AudioChunk(pcm16=pcm16[offset:offset + 3200], sample_rate_hz=16_000)
            if when == "while the final decodes":
                yield stt_pb2.AudioChunk(pcm16=b"\0\0" * 16_000, sample_rate_hz=16_000)  # 1 s: the endpoint
        sent.set()
        time.sleep(30)  # hold the call open until the client cancels it

    with grpc.insecure_channel(server.address) as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(chunks())
        sent.wait(10)
        time.sleep(0.3)
        call.cancel()
    assert wait_released(server, timeout_sec=3.0) == dict.fromkeys(held(server), 0)


def test_garbage_that_is_not_protobuf_is_err1010_without_a_traceback(server, sentences):
    with HonestStream(kiosk_address(server), sentences) as kiosk, grpc.insecure_channel(server.address) as channel:
        create = channel.unary_unary("/stt.v1.SpeechToText/CreateSession",
                                     request_serializer=lambda b: b, response_deserializer=lambda b: b)
        stream = channel.stream_stream("/stt.v1.SpeechToText/StreamingRecognize",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
        outcomes = []
        for payload in (b"\x0a\x03\xff\xfe\xfd", b"\xff\xff\xff\xff", b"\x0a\xff\x01"):
            for call in (lambda p=payload: create(p, timeout=10),
                         lambda p=payload: list(stream(iter([p]), timeout=10))):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                outcomes.append((info.value.code(), (info.value.details() or "")[:7]))
    assert outcomes == [(grpc.StatusCode.INVALID_ARGUMENT, "ERR1010")] * 6
    assert "Traceback" not in server.log()
    kiosk.assert_served()


def test_a_stream_that_starts_during_drain_is_err1015_and_keeps_its_first_chunk():
    """In-process: the window between SIGTERM and the port closing is too short to aim at over a
    socket, so the runtime is put in drain directly and a stream is started against it."""
    runtime = Runtime(load_config(env={}))
    try:
        async def attempt() -> ApplianceError:
            assert await runtime.drain(timeout_sec=1.0)  # past the drain notice: no stream is open

            async def chunks():
                yield AudioIn(session_id="kiosk-late", pcm16=SILENCE_100MS, sample_rate_hz=16_000)
            with pytest.raises(ApplianceError) as info:
                async for _ in runtime.sessions.stream(chunks()):
                    pass
            return info.value

        error = asyncio.run(attempt())
    finally:
        runtime.close()
    assert error.code == "ERR1015" and error.retry_after_sec
