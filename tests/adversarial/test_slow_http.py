"""Slow HTTP clients and uploaders that hang up, against a real appliance (runtime with the bundled
model, both HTTP planes on real sockets, 127.0.0.1 and ::1 on one port each).

- 200 slow-loris connections (half a header, a byte now and then) on the client plane from
  127.0.0.1: /health on the operator plane answers in under 1 s, an honest upload from ::1 is
  transcribed, and the trickle does not keep a connection past the header deadline.
- The same attack on the operator plane from one address holds only that address's share of the
  slots; /health from ::1 still answers in under 1 s.
- An upload whose client hangs up right after sending frees its slot (and its session) within 2 s:
  the next upload is not refused with ERR1007.
Caps and deadlines are set small so the test is quick; loops are bounded by deadlines.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from appliance.config import load_config
from appliance.runtime import Runtime
from appliance.transport.http.planes import HttpPlanes
from tests.helpers import REPO_ROOT

JFK = REPO_ROOT / "hwtests/speech/sent_en_jfk_ask_not.wav"
PER_ADDRESS = 4
HEADER_TIMEOUT_SEC = 2.0
BODY_TIMEOUT_SEC = 2.0
HEALTH_BOUND_SEC = 1.0
SETTINGS = {
    "server.http_host": "127.0.0.1,::1", "server.metrics_port": 0, "server.http_rate_limit_rps": 0.0,
    "server.http_max_connections": 16, "server.http_max_connections_per_address": PER_ADDRESS,
    "server.http_header_timeout_sec": HEADER_TIMEOUT_SEC,
    "openai.host": "127.0.0.1,::1", "openai.port": 0, "openai.max_concurrent_requests": 1,
    "openai.max_connections": 16, "openai.max_connections_per_address": PER_ADDRESS,
    "openai.header_timeout_sec": HEADER_TIMEOUT_SEC, "openai.body_timeout_sec": BODY_TIMEOUT_SEC,
    "auth.create_session_auth_profile": "none",
}


@dataclass
class Appliance:
    runtime: Runtime
    planes: HttpPlanes

    @property
    def operator_port(self) -> int:
        return self.planes.operator_port

    @property
    def client_port(self) -> int:
        port = self.planes.client_port
        assert port is not None
        return port


@pytest.fixture(scope="module")
def appliance() -> Iterator[Appliance]:
    config = load_config(overrides=SETTINGS, env={})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="appliance-loop", daemon=True)
    thread.start()

    async def boot() -> tuple[Runtime, HttpPlanes]:
        runtime = Runtime(config)
        planes = HttpPlanes(config, runtime, asyncio.get_running_loop()).start()
        await asyncio.to_thread(runtime.load, runtime.resolve_model())
        runtime.mark_serving()
        return runtime, planes

    runtime, planes = asyncio.run_coroutine_threadsafe(boot(), loop).result(180)
    try:
        yield Appliance(runtime, planes)
    finally:
        planes.stop()
        asyncio.run_coroutine_threadsafe(shut_down(runtime), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def shut_down(runtime: Runtime) -> None:
    """Release the runtime, then end whatever it left running, so the loop closes with nothing pending."""
    runtime.close()
    await asyncio.sleep(0)
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- clients ------------------------------------------------------------------------------------


def health_seconds(port: int, host: str = "::1") -> float:
    """One GET /health from `host`; seconds until the answer (an error past 5 s)."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://[{host}]:{port}/health" if ":" in host else
                                f"http://{host}:{port}/health", timeout=5) as reply:
        assert reply.status == 200, reply.status
        reply.read()
    return time.monotonic() - started


class SlowLoris:
    """`count` connections from 127.0.0.1 that send half a request header, then a byte now and then;
    a connection the server closes is opened again (at most `REOPEN_PER_ROUND` a round), as a
    determined attacker would."""

    REOPEN_PER_ROUND = 25
    ROUND_SEC = 0.3

    def __init__(self, port: int, count: int, path: str):
        self._port = port
        self._head = f"POST {path} HTTP/1.1\r\nHost: victim\r\nX-Slow: ".encode()
        self.sockets = [self._open() for _ in range(count)]
        self.connections = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self._port), timeout=5)
            sock.setblocking(False)
            sock.send(self._head)
            return sock
        except OSError:
            return None

    def _trickle(self) -> None:
        while not self._stop.wait(self.ROUND_SEC):
            reopened = 0
            for i, sock in enumerate(self.sockets):
                if sock is not None and _alive(sock):
                    try:
                        sock.send(b"a")
                        continue
                    except OSError:
                        pass
                if sock is not None:
                    sock.close()
                self.sockets[i] = None
                if reopened < self.REOPEN_PER_ROUND:
                    self.sockets[i] = self._open()
                    reopened += 1
                    self.connections += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            if sock is not None:
                sock.close()


def _alive(sock: socket.socket) -> bool:
    """The server has neither answered nor closed this connection."""
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False  # an answer, or the close
    except BlockingIOError:
        return True
    except OSError:
        return False


def refusal_of_one_more(port: int) -> bytes:
    """What a fresh connection from 127.0.0.1 that sends nothing is told."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(4096)


def trickle_until_answered(port: int, start: bytes, timeout_sec: float) -> tuple[bytes, float]:
    """`start`, then a byte every 0.3 s until the server answers; (the answer, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("::1", port), timeout=5) as sock:
        sock.sendall(start)
        while time.monotonic() - started < timeout_sec:
            sock.settimeout(0.3)
            try:
                answer = sock.recv(4096)
                return answer, time.monotonic() - started
            except TimeoutError:
                sock.sendall(b"a")
    raise AssertionError(f"no answer within {timeout_sec} s")


@contextmanager
def slow_loris(port: int, count: int, path: str) -> Iterator[SlowLoris]:
    attack = SlowLoris(port, count, path)
    try:
        yield attack
    finally:
        attack.close()


def wav_bytes(seconds_of_jfk_repeats: int = 1) -> bytes:
    audio, rate = sf.read(str(JFK), dtype="float32")
    out = io.BytesIO()
    sf.write(out, np.tile(audio, seconds_of_jfk_repeats), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def multipart(audio: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(port: int, audio: bytes, host: str = "::1") -> tuple[int, dict]:
    body, content_type = multipart(audio)
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.request("POST", "/v1/audio/transcriptions", body=body, headers={"Content-Type": content_type})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


@contextmanager
def upload_then_hang_up(port: int, audio: bytes) -> Iterator[None]:
    """Send a whole upload; the connection is closed, its answer unread, when the block ends."""
    body, content_type = multipart(audio)
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: victim\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        yield


def wait_until(check, timeout_sec: float, step_sec: float = 0.05) -> float:
    """Seconds until `check()` held; fails past `timeout_sec`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_sec, f"not within {timeout_sec} s"
        time.sleep(step_sec)
    return time.monotonic() - started


# --- tests --------------------------------------------------------------------------------------


def test_slow_clients_on_the_client_plane_leave_health_and_honest_uploads_alone(appliance):
    client_door = appliance.planes.client.door
    with slow_loris(appliance.client_port, 200, "/v1/audio/transcriptions"):
        # One address holds its share of the client plane and no more.
        wait_until(lambda: client_door.connections_by_address().get("127.0.0.1", 0) == PER_ADDRESS, 2.0)
        refusal = refusal_of_one_more(appliance.client_port)
        assert refusal.startswith(b"HTTP/1.1 503") and b"ERR1007" in refusal, refusal
        latencies = [health_seconds(appliance.operator_port) for _ in range(5)]
        status, answer = upload(appliance.client_port, wav_bytes())  # from ::1, while the attack goes on
        assert status == 200 and "ask not" in answer["text"].lower(), answer
        latencies += [health_seconds(appliance.operator_port) for _ in range(3)]
        assert max(latencies) < HEALTH_BOUND_SEC, latencies
    wait_until(lambda: client_door.open_connections == 0, HEADER_TIMEOUT_SEC + 3.0)


def test_slow_clients_on_the_operator_plane_hold_only_their_share(appliance):
    operator_door = appliance.planes.operator.door
    with slow_loris(appliance.operator_port, 100, "/health"):
        wait_until(lambda: operator_door.connections_by_address().get("127.0.0.1", 0) == PER_ADDRESS, 2.0)
        latencies = [health_seconds(appliance.operator_port, "::1") for _ in range(8)]
        assert max(latencies) < HEALTH_BOUND_SEC, latencies
    wait_until(lambda: operator_door.open_connections == 0, HEADER_TIMEOUT_SEC + 3.0)
    assert health_seconds(appliance.operator_port, "127.0.0.1") < HEALTH_BOUND_SEC, "the address is served again"


@pytest.mark.parametrize("plane", ["operator", "client"])
def test_a_byte_now_and_then_does_not_extend_the_header_deadline(appliance, plane):
    port = appliance.operator_port if plane == "operator" else appliance.client_port
    half_a_header = b"GET /health HTTP/1.1\r\nHost: victim\r\nX-Slow: "
    answer, seconds = trickle_until_answered(port, half_a_header, HEADER_TIMEOUT_SEC + 5.0)
    assert answer.startswith(b"HTTP/1.1 408") and b"ERR1012" in answer and b"header_timeout_sec" in answer, answer
    assert HEADER_TIMEOUT_SEC <= seconds < HEADER_TIMEOUT_SEC + 2.0, seconds


def test_a_body_sent_a_byte_now_and_then_is_cut_at_the_body_deadline(appliance):
    header = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: victim\r\n"
              b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 100000\r\n\r\n--zz")
    answer, seconds = trickle_until_answered(appliance.client_port, header, HEADER_TIMEOUT_SEC + BODY_TIMEOUT_SEC + 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"openai.body_timeout_sec" in answer, answer
    assert HEADER_TIMEOUT_SEC + BODY_TIMEOUT_SEC <= seconds < HEADER_TIMEOUT_SEC + BODY_TIMEOUT_SEC + 2.0, seconds


def sessions_open(appliance: Appliance) -> int:
    return appliance.runtime.status.snapshot().sessions.active


@pytest.mark.parametrize("hang_up", ["right after sending", "while it decodes"])
def test_an_upload_whose_client_hung_up_frees_its_slot_within_2_s(appliance, hang_up):
    transcriber = appliance.planes.transcriber
    assert transcriber is not None and transcriber.max_concurrent == 1
    long_audio = wav_bytes(12)  # about 130 s of speech: far longer to decode than the 2 s allowed
    with upload_then_hang_up(appliance.client_port, long_audio):
        if hang_up == "while it decodes":
            wait_until(lambda: transcriber.running == 1 and sessions_open(appliance) == 1, 20.0)
            time.sleep(0.5)  # decoding
    closed_at = time.monotonic()
    time.sleep(0.5)  # a request that was still queued when its client left has been picked up (or dropped)
    wait_until(lambda: transcriber.running == 0 and sessions_open(appliance) == 0, 1.5)
    freed_after = time.monotonic() - closed_at
    status, answer = upload(appliance.client_port, wav_bytes())
    assert status == 200, answer  # not 503 ERR1007: the slot is free
    assert "ask not" in answer["text"].lower()
    assert freed_after < 2.0


def test_a_trusted_proxy_is_not_held_to_one_addresss_share():
    """Behind a TLS proxy every connection has the proxy's address: the door holds it to the global
    cap only (server.http_trusted_proxies), while any other host keeps its share."""
    config = load_config(overrides={**SETTINGS, "server.http_trusted_proxies": ["::1"]}, env={})
    runtime = Runtime(config)
    loop = asyncio.new_event_loop()
    planes = HttpPlanes(config, runtime, loop).start()
    door = planes.operator.door
    try:
        with slow_loris(planes.operator_port, PER_ADDRESS + 2, "/health"):
            wait_until(lambda: door.connections_by_address().get("127.0.0.1", 0) == PER_ADDRESS, 2.0)
            proxied = [socket.create_connection(("::1", planes.operator_port), timeout=5)
                       for _ in range(PER_ADDRESS + 2)]
            try:
                wait_until(lambda: door.connections_by_address().get("::1", 0) == PER_ADDRESS + 2, 2.0)
            finally:
                for sock in proxied:
                    sock.close()
    finally:
        planes.stop()
        runtime.close()
        loop.close()
