"""The OpenAI client plane over TLS (openai.tls with the gRPC certificate), as a page served over https
needs it: the `openai` client (httpx) transcribes through it, and the front door holds at the TLS
terminator with the clients' own addresses (127.0.0.2 and 127.0.0.3 are loopback addresses of their
own), its refusals readable over TLS; a slow handshake, a slow header or body after it, plain HTTP and
the loopback port behind the terminator are each turned away, and an upload whose client hangs up
frees its slot, as without TLS."""

from __future__ import annotations

import http.client
import io
import json
import select
import socket
import ssl
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI

from clients.corpus import wer
from tests.helpers import REPO_ROOT
from tests.inprocess import InProcessAppliance
from tests.test_tls import make_self_signed

JFK = REPO_ROOT / "hwtests/speech/sent_en_jfk_ask_not.wav"
JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
HEADER_TIMEOUT_SEC = 2.0
BODY_TIMEOUT_SEC = 2.0
PER_ADDRESS = 2
ALLOWED, NEIGHBOUR, OUTSIDER = "127.0.0.2", "127.0.0.3", "127.0.0.1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("openai-tls"), "server")


@pytest.fixture(scope="module")
def server(certs):
    with InProcessAppliance("--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), env={
            "STT_HTTP_ALLOWLIST": f"{ALLOWED}/32,{NEIGHBOUR}/32", "STT_HTTP_RATE_LIMIT_RPS": "0",
            "STT_OPENAI_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
            "STT_OPENAI_MAX_CONCURRENT_REQUESTS": "1", "STT_OPENAI_HEADER_TIMEOUT_SEC": str(HEADER_TIMEOUT_SEC),
            "STT_OPENAI_BODY_TIMEOUT_SEC": str(BODY_TIMEOUT_SEC)}) as app:
        yield app


def trusting(certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.cert))


def tls_socket(server, certs, source: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.openai_port), timeout=10, source_address=(source, 0))
    return trusting(certs).wrap_socket(raw, server_hostname="localhost")


def get(server, certs, source: str, path: str = "/v1/models") -> tuple[int, dict]:
    connection = http.client.HTTPSConnection("localhost", server.openai_port, timeout=10,
                                             source_address=(source, 0), context=trusting(certs))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_the_openai_client_transcribes_over_https_as_the_allowed_address(server, certs):
    transport = httpx.HTTPTransport(verify=trusting(certs), local_address=ALLOWED)
    with httpx.Client(transport=transport) as http_client, JFK.open("rb") as f:
        client = OpenAI(base_url=f"https://localhost:{server.openai_port}/v1", api_key="any", max_retries=0,
                        timeout=120, http_client=http_client)
        answer = client.audio.transcriptions.create(model="whisper-1", file=f)
        assert [m.id for m in client.models.list().data]
    # The allow-list names 127.0.0.2 and .3 only: the app saw the client's address, not the terminator's.
    assert wer(JFK_TEXT, answer.text) <= 0.25, answer.text


def test_an_answer_is_not_held_back_for_a_delayed_ack(server, certs):
    """The terminator turns Nagle off on the client's socket: with it on, every answer on a kept-alive
    connection waited ~40 ms for the client's delayed ACK (the fastest of seven shows it, whatever the load)."""
    connection = http.client.HTTPSConnection("localhost", server.openai_port, timeout=10,
                                             source_address=(ALLOWED, 0), context=trusting(certs))
    times = []
    try:
        for _ in range(7):
            started = time.perf_counter()
            connection.request("GET", "/v1/models")
            connection.getresponse().read()
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    assert min(times) < 0.025, times


def test_an_address_outside_the_allow_list_reads_its_refusal_over_tls(server, certs):
    status, body = get(server, certs, OUTSIDER)
    assert (status, body["code"]) == (403, "ERR1005"), body


def test_one_address_at_its_share_leaves_room_for_the_next(server, certs):
    wait_until_no_connection_is_open(server)
    held = [tls_socket(server, certs, ALLOWED) for _ in range(PER_ADDRESS)]
    try:
        status, body = get(server, certs, ALLOWED)
        assert (status, body["code"]) == (503, "ERR1007") and "per_address" in body["message"], body
        assert get(server, certs, NEIGHBOUR)[0] == 200
    finally:
        for sock in held:
            sock.close()
    wait_for_free_share(server, certs)  # the held slots come back when they close


def wait_until_no_connection_is_open(server) -> None:
    door = server.server._http.client_door
    deadline = time.monotonic() + 5
    while door.open_connections:
        assert time.monotonic() < deadline, door.connections_by_address()
        time.sleep(0.05)


def wait_for_free_share(server, certs) -> None:
    deadline = time.monotonic() + 5
    while get(server, certs, ALLOWED)[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_silent_handshake_and_a_slow_header_are_cut_at_the_header_deadline(server, certs):
    wait_until_no_connection_is_open(server)  # the last test's, closed by the client, are released after
    silent = socket.create_connection(("127.0.0.1", server.openai_port), timeout=10, source_address=(ALLOWED, 0))
    slow = tls_socket(server, certs, ALLOWED)
    try:
        slow.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert silent.recv(1024) == b""  # closed without a handshake
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"ERR1012" in answer, answer
        assert time.monotonic() - started < HEADER_TIMEOUT_SEC + 3
    finally:
        silent.close()
        slow.close()


def test_plain_http_and_an_untrusting_client_get_nothing(server, certs, tmp_path):
    plain = http.client.HTTPConnection("127.0.0.1", server.openai_port, timeout=10, source_address=(ALLOWED, 0))
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/v1/models")
        plain.getresponse()
    plain.close()
    other = make_self_signed(tmp_path, "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        get(server, other, ALLOWED)


def test_the_loopback_port_behind_the_terminator_serves_no_one_directly(server):
    behind = server.server._http.client.port  # the waitress listener the terminator pipes to
    assert behind != server.openai_port
    connection = http.client.HTTPConnection("127.0.0.1", behind, timeout=10)
    try:
        connection.request("GET", "/v1/models")
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["code"]) == (403, "ERR1005")
    finally:
        connection.close()


def test_a_body_trickled_over_tls_is_cut_at_the_body_deadline(server, certs):
    wait_until_no_connection_is_open(server)
    sock = tls_socket(server, certs, ALLOWED)
    try:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: 100000\r\n\r\n")
        started = time.monotonic()
        while not select.select([sock], [], [], 0.25)[0]:  # a byte every 0.25 s: progress, but too slow
            sock.sendall(b"x")
            assert time.monotonic() - started < HEADER_TIMEOUT_SEC + BODY_TIMEOUT_SEC + 3
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and b"ERR1012" in answer and b"body_timeout_sec" in answer, answer
    finally:
        sock.close()


def test_an_upload_whose_client_hangs_up_over_tls_frees_its_slot(server, certs):
    audio, rate_hz = sf.read(str(JFK), dtype="int16")
    wav = io.BytesIO()
    sf.write(wav, np.tile(audio, 8), rate_hz, format="WAV", subtype="PCM_16")  # 88 s: long to decode
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + wav.getvalue()
            + b"\r\n--b--\r\n")
    transcriber = server.server._http.transcriber
    sock = tls_socket(server, certs, ALLOWED)
    sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                 b"boundary=b\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 20
    while transcriber.running != 1:  # decoding
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    sock.close()  # the answer unread
    closed_at = time.monotonic()
    while transcriber.running or server.runtime.status.snapshot().sessions.active:
        assert time.monotonic() - closed_at < 3.0, "the abandoned upload kept its slot"
        time.sleep(0.05)
