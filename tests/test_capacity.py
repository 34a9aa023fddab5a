"""Caps, backpressure and fairness through real appliance processes: every refusal has its code."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from appliance.config import load_config
from appliance.errors import ApplianceError
from appliance.runtime import Runtime
from appliance.streaming.session import SessionRequest
from clients.audio import load_pcm16
from clients.corpus import wer
from clients.sdk import SttClient, SttError
from tests.conftest import expect_error, finals_text, stream_file


def test_session_cap_err1007(server_with):
    server = server_with(server_max_sessions=2)
    with SttClient(server.address) as client:
        client.create_session()
        client.create_session()
        error = expect_error(client.create_session)
    assert error.code == "ERR1007" and error.status == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_fixed_vad_pool_err1008_leaves_the_running_stream_alone(server_with, sentences):
    server = server_with(server_max_sessions=4, vad_model_pool_size=1, vad_model_pool_growth_factor=1.0)
    first: dict = {}
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(server.address) as client:
        session = client.create_session()
        thread = threading.Thread(target=lambda: first.setdefault(
            "results", list(client.stream_audio(session, pcm16, rate_hz, realtime=True))))
        thread.start()
        threading.Event().wait(1.0)
        second = client.create_session()
        error = expect_error(lambda: list(client.stream_audio(second, pcm16[:32000], rate_hz, realtime=False)))
        thread.join(timeout=60)
    assert error.code == "ERR1008"
    assert wer(sentences.reference, finals_text(first["results"])) <= 0.15


def test_audio_per_session_err1013_after_the_finals_it_allowed(server_with, sentences):
    server = server_with(server_max_audio_seconds_per_session=4)
    results = []
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(server.address) as client:
        session = client.create_session()
        error = expect_error(lambda: results.extend(client.stream_audio(session, pcm16, rate_hz, realtime=False)))
    assert error.code == "ERR1013" and "max_audio_seconds_per_session" in error.message
    assert [r.text for r in results if r.is_final][:1] and wer(sentences.sentences[0], results[0].text) <= 0.25


def test_global_buffer_cap_err1014(server_with, sentences):
    server = server_with(server_max_total_buffer_bytes=32_000)  # 1 s of 16 kHz PCM16 across all streams
    error = expect_error(lambda: stream_file(server.address, sentences.path))
    assert error.code == "ERR1014" and "max_total_buffer_bytes" in error.message


def test_memory_budget_refuses_new_sessions_err1014(server_with):
    server = server_with(server_memory_budget_bytes=1)
    with SttClient(server.address) as client:
        error = expect_error(client.create_session)
    assert error.code == "ERR1014" and "memory budget" in error.message


def test_final_without_a_decode_slot_in_time_err1009(server_with, sentences):
    server = server_with(server_decode_queue_timeout_sec=0.01)
    pcm16, rate_hz = load_pcm16(sentences.path)

    def batch_upload(_):
        try:
            with SttClient(server.address) as client:
                session = client.create_session(attributes={"upload_mode": "batch"})
                list(client.send_chunks(session, [pcm16], rate_hz, realtime=False))
            return "ok"
        except SttError as err:
            return err.code

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(batch_upload, range(4)))
    assert "ERR1009" in outcomes, outcomes
    assert set(outcomes) <= {"ok", "ERR1009"}


def test_grpc_message_size_cap(server_with, sentences):
    server = server_with(server_grpc_max_receive_message_bytes=50_000)
    pcm16, rate_hz = load_pcm16(sentences.path)
    with SttClient(server.address) as client:
        session = client.create_session(attributes={"upload_mode": "batch"})
        error = expect_error(lambda: list(client.send_chunks(session, [pcm16], rate_hz, realtime=False)))
    assert error.status == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_flooding_stream_does_not_starve_a_realtime_stream(appliance_server, sentences):
    pcm16, rate_hz = load_pcm16(sentences.path)
    flood_audio = pcm16 * 8  # ~40 s of speech sent as fast as the server will take it

    def flood():
        with SttClient(appliance_server.address) as client:
            session = client.create_session()
            return [r for r in client.stream_audio(session, flood_audio, rate_hz, realtime=False) if r.is_final]

    with ThreadPoolExecutor(1) as pool:
        flooding = pool.submit(flood)
        quiet = stream_file(appliance_server.address, sentences.path, realtime=True)
        flood_finals = flooding.result(timeout=300)
    quiet_finals = [r for r in quiet if r.is_final]
    assert len(quiet_finals) == 3 and wer(sentences.reference, finals_text(quiet)) <= 0.15
    # Starved, the quiet stream would wait behind the flood's backlog (24 decodes, ~15 s); served in
    # turn it waits for at most one of them, plus its own decode, on a box the flood keeps busy.
    assert max(r.latency_sec for r in quiet_finals) < 5.0, [r.latency_sec for r in quiet_finals]
    assert len(flood_finals) == 24, "backpressure slowed the flood; it lost nothing"


def test_partials_drop_under_pressure_but_every_final_arrives(server_with, sentences):
    # Six live speakers asking for partials want more decodes than one decode slot gives (one
    # replica, no batching: the shipped cpu profile holds six such streams, docs/capacity.md).
    server = server_with(model_profile="default", server_max_decode_batch_size=1)
    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda _: stream_file(server.address, sentences.path, realtime=True,
                                                   attributes={"partial": "true"}), range(6)))
    dropped = 0
    for results in runs:
        finals = [r for r in results if r.is_final]
        assert [r.utterance_index for r in finals] == [0, 1, 2]
        assert wer(sentences.reference, finals_text(results)) <= 0.15
        dropped += sum(r.partials_dropped for r in finals)
    assert dropped > 0


def test_new_sessions_are_refused_while_starting_and_draining():
    config = load_config(None, None)
    runtime = Runtime(config)
    with pytest.raises(ApplianceError) as starting:
        runtime.sessions.create_session(SessionRequest())
    asyncio.run(runtime.drain(timeout_sec=1.0))
    with pytest.raises(ApplianceError) as draining:
        runtime.sessions.create_session(SessionRequest())
    runtime.close()
    assert starting.value.code == draining.value.code == "ERR1015"
    assert "draining" in draining.value.message and starting.value.retry_after_sec
