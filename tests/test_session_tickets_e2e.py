"""Only a session's owner can use it: a real server refuses streams without the session's ticket,
and the refusal leaves the real session untouched for its owner."""

from __future__ import annotations

import grpc
import pytest

from appliance.api import stt_pb2, stt_pb2_grpc
from clients.audio import load_pcm16
from clients.corpus import wer
from clients.sdk import SttClient
from tests.conftest import finals_text


def attach(address: str, session_id: str, token: str) -> grpc.RpcError:
    """One chunk of silence naming `session_id` with `token`; the error it ends with."""
    chunk = stt_pb2.AudioChunk(session_id=session_id, session_token=token, pcm16=b"\0\0" * 1600,
                               sample_rate_hz=16_000)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        list(stt_pb2_grpc.SpeechToTextStub(channel).StreamingRecognize(iter([chunk]), timeout=30))
    return info.value


@pytest.mark.parametrize("how", ["no ticket", "another session's ticket", "forged ticket", "garbage"])
def test_a_stream_without_the_sessions_ticket_is_refused_and_the_owner_streams_after_it(
        appliance_server, sentences, how):
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(appliance_server.address) as client:
        victim = client.create_session(session_id=f"kiosk-{how.replace(' ', '-').replace(chr(39), '')}")
        other = client.create_session()
        token = {"no ticket": "", "another session's ticket": other.session_token,
                 "forged ticket": victim.session_token[:-4] + "AAAA", "garbage": "caf\u00e9 \u00ff"}[how]
        error = attach(appliance_server.address, victim.session_id, token)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error.details().startswith("ERR1005")
        results = list(client.send_chunks(victim, [pcm16[i:i + 3200] for i in range(0, len(pcm16), 3200)],
                                          rate_hz, realtime=False))
    assert wer(sentences.reference, finals_text(results)) <= 0.15


def test_create_session_always_returns_a_ticket(appliance_server):
    with SttClient(appliance_server.address) as client:
        first, second = client.create_session(), client.create_session(session_id="kiosk-ticket")
    assert first.session_token.startswith("v1.") and second.session_token.startswith("v1.")
    assert first.session_token != second.session_token


def test_a_garbage_session_id_on_a_chunk_is_err1001_without_echoing_it(appliance_server):
    error = attach(appliance_server.address, "\u00e9" * 10_000, "")
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details().startswith("ERR1001")
    assert len(error.details()) < 200
