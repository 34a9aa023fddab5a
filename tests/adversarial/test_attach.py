"""Attaching to a session that is not yours: every way of presenting the wrong ticket is refused
(ERR1005, or ERR1002 for a session already streaming), and the real session is left to its owner."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from appliance.security.tickets import TicketSigner
from clients.audio import load_pcm16
from clients.sdk import SttClient
from tests.adversarial.victim import assert_transcribes
from tests.conftest import finals_text, serve_in_process

TICKET_SECRET = "adversarial-ticket-secret"


def attach(address: str, session_id: str, token: str) -> grpc.RpcError:
    """One chunk of silence naming `session_id` with `token`; the error it ends with."""
    chunk = stt_pb2.AudioChunk(session_id=session_id, session_token=token, pcm16=b"\0\0" * 1600,
                               sample_rate_hz=16_000)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        list(stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(iter([chunk]), timeout=30))
    return info.value


@pytest.fixture(scope="module")
def shared_secret_server(request):
    """An appliance whose ticket secret the test knows, so it can sign tickets the server would accept."""
    return serve_in_process(request, env={"STT_AUTH_SESSION_TICKET_SECRET": TICKET_SECRET})


def expired_ticket(session_id: str) -> str:
    """A correctly signed ticket for `session_id` that expired an hour ago."""
    signer = TicketSigner(TICKET_SECRET, clock=lambda: time.time() - 3600)
    return signer.issue(session_id, {}, "ip:127.0.0.1", ttl_sec=60)


@pytest.mark.parametrize("how", ["no ticket", "another session's ticket", "forged ticket", "expired ticket",
                                 "garbage"])
def test_a_stream_without_the_sessions_ticket_is_refused_and_the_owner_streams_after_it(
        shared_secret_server, front_center_wav, how):
    address = shared_secret_server.address
    with SttClient(address) as client:
        victim = client.create_session(session_id=f"kiosk-{how.replace(' ', '-').replace(chr(39), '')}")
        other = client.create_session()
    token = {"no ticket": "", "another session's ticket": other.session_token,
             "forged ticket": victim.session_token[:-4] + "AAAA", "expired ticket": expired_ticket(victim.session_id),
             "garbage": "caf\u00e9 \u00ff" * 1000}[how]
    error = attach(address, victim.session_id, token)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error.details().startswith("ERR1005")
    if how == "expired ticket":
        assert "expired" in error.details()
    assert_transcribes(address, front_center_wav, session=victim)


def test_a_stolen_ticket_cannot_take_over_a_stream_in_progress(appliance_server, sentences):
    pcm16, rate_hz = load_pcm16(sentences.path)
    results: list = []
    with SttClient(appliance_server.address) as client:
        owner = client.create_session(session_id="kiosk-streaming")
        streaming = threading.Thread(target=lambda: results.extend(
            client.stream_audio(owner, pcm16, rate_hz, chunk_ms=200, realtime=True)))
        streaming.start()
        time.sleep(1.0)
        error = attach(appliance_server.address, owner.session_id, owner.session_token)
        streaming.join(timeout=120)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and error.details().startswith("ERR1002")
    assert len([r for r in results if r.is_final]) == 3 and finals_text(results)


def test_create_session_always_returns_a_ticket(appliance_server):
    with SttClient(appliance_server.address) as client:
        first, second = client.create_session(), client.create_session(session_id="kiosk-ticket")
    assert first.session_token.startswith("v1.") and second.session_token.startswith("v1.")
    assert first.session_token != second.session_token


def test_a_garbage_session_id_on_a_chunk_is_err1001_without_echoing_it(appliance_server, front_center_wav):
    error = attach(appliance_server.address, "\u00e9" * 10_000, "")
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().startswith("ERR1001")
    assert len(error.details()) < 200
    assert_transcribes(appliance_server.address, front_center_wav)
