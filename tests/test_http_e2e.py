"""The HTTP plane of a real serving appliance: metrics that move with real streams, health that
agrees with gRPC health, and admin load/unload while streams keep running."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from clients.audio import load_pcm16
from clients.corpus import normalize
from clients.local_server import LocalAppliance
from clients.sdk import SttClient, SttError
from tests.conftest import finals_text, serve_in_process, stream_file
from tests.inprocess import InProcessAppliance
from tests.speech import FRONT_CENTER_WAV

ADMIN_TOKEN = "admin-e2e-token"
PROMPT = FRONT_CENTER_WAV


def _need_prompt():
    if not PROMPT.exists():
        pytest.skip("Debian's alsa-utils prompts are not installed (apt-get install alsa-utils)")


@pytest.fixture(scope="module")
def server(request) -> InProcessAppliance:
    return serve_in_process(request, env={"STT_ADMIN_TOKEN": ADMIN_TOKEN, "STT_HTTP_RATE_LIMIT_RPS": "0",
                                          "STT_METRICS_EXPOSE_API_KEY_SESSIONS": "true"})


def http(server: InProcessAppliance, path: str, *, body: dict | None = None, token: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.http_url + path, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            payload = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        payload, status = err.read(), err.code
    return status, (json.loads(payload) if payload[:1] in (b"{", b"[") else payload.decode())


def samples(server: InProcessAppliance) -> dict[tuple[str, tuple], float]:
    status, text = http(server, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def grpc_health(server: InProcessAppliance) -> int:
    with grpc.insecure_channel(server.address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_metrics_move_after_a_real_stream_and_parse(server):
    _need_prompt()
    before = samples(server)
    results = stream_file(server.address, PROMPT, attributes={"api_key": "kiosk-7"})
    assert "front center" in normalize(finals_text(results))  # Whisper writes "centre" too
    after = samples(server)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("stt_results_total", kind="final") >= 1
    assert grew("stt_final_latency_seconds_count") >= 1
    assert grew("stt_decodes_total", kind="final", outcome="success") >= 1
    assert grew("stt_decode_seconds_count", kind="final") >= 1
    assert grew("stt_decode_rtf_count", kind="final") >= 1
    assert grew("stt_sessions_created_total") == 1
    assert after[("stt_model_loaded", (("backend", "faster_whisper"), ("device", "cpu"),
                                       ("model_id", "cpu-tiny.en")))] == 1
    assert after[("process_resident_memory_bytes", ())] > 50e6
    assert after[("stt_up", ())] == 1

    status, snapshot = http(server, "/metrics.json")
    assert status == 200 and snapshot["recent"]["count"] >= 1
    assert snapshot["recent"]["points"][-1]["latency_sec"] > 0
    assert snapshot["decode"]["decodes"] >= 1 and snapshot["decode"]["rtf"] > 0


def test_api_key_sessions_are_exposed_hashed_and_errors_counted_by_code(server):
    _need_prompt()
    pcm16, rate_hz = load_pcm16(PROMPT)
    with SttClient(server.address) as client:
        session = client.create_session(attributes={"api_key": "secret-kiosk-key"})
        _, snapshot = http(server, "/metrics.json")  # admitted, not yet streaming
        by_key = snapshot["sessions"]["by_api_key"]
        assert by_key and all(len(key) == 12 and "secret" not in key for key in by_key)
        _, text = http(server, "/metrics")
        assert "stt_active_sessions_by_api" in text and "secret-kiosk-key" not in text
        assert finals_text(list(client.stream_audio(session, pcm16, rate_hz, realtime=False)))
        with pytest.raises(SttError):
            client.create_session(decode_profile="no-such-profile")
    _, snapshot = http(server, "/metrics.json")
    assert snapshot["totals"]["errors_by_code"].get("ERR1010", 0) >= 1
    assert ('stt_errors_total{code="ERR1010",stage="create_session"}' in http(server, "/metrics")[1])


def test_http_health_and_grpc_health_agree_while_serving(server):
    status, health = http(server, "/health")
    assert status == 200 and health["status"] == "ok" and health["models_loaded"] >= 1
    assert grpc_health(server) == health_pb2.HealthCheckResponse.SERVING


def test_system_reports_hardware_profile_models_and_versions(server):
    status, system = http(server, "/system")
    assert status == 200
    assert system["profile"]["chosen"] and system["hardware"], "the boot-time hardware decision is shown"
    assert any(m["model_id"] == "cpu-tiny.en" and m["default"] for m in system["models"])
    assert system["memory"]["rss_bytes"] > 0 and "faster-whisper" in system["versions"]


def _stream_in_thread(server: InProcessAppliance, path, results: list, errors: list, **session_options):
    def run():
        try:
            pcm16, rate_hz = load_pcm16(path)
            with SttClient(server.address) as client:
                session = client.create_session(**session_options)
                for result in client.stream_audio(session, pcm16, rate_hz, realtime=True):
                    results.append((time.monotonic(), result))
        except Exception as err:  # reported by the test
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_admin_load_and_unload_while_streams_run(server, sentences):
    # A realtime stream on the default model runs through everything below.
    live, live_errors = [], []
    live_thread = _stream_in_thread(server, sentences.path, live, live_errors)
    time.sleep(1.0)
    loaded_at = time.monotonic()
    status, reply = http(server, "/admin/load_model", body={"profile_id": "default", "model_id": "cpu-second"},
                         token=ADMIN_TOKEN)
    assert status == 200 and reply["status"] == "loaded" and reply["model"]["model_id"] == "cpu-second"
    status, reply = http(server, "/admin/load_model", body={"profile_id": "default", "model_id": "cpu-second"},
                         token=ADMIN_TOKEN)
    assert status == 200 and reply["status"] == "already_loaded"

    # Clients choose it by model_id.
    results = stream_file(server.address, PROMPT if PROMPT.exists() else sentences.path, model_id="cpu-second")
    assert results and all(r.model_id == "cpu-second" for r in results)

    # In use: refused without drain, draining with it; a draining model takes no new sessions.
    second, second_errors = [], []
    second_thread = _stream_in_thread(server, sentences.path, second, second_errors, model_id="cpu-second")
    deadline = time.monotonic() + 10
    while not any(m["model_id"] == "cpu-second" and m["active_sessions"] for m in http(
            server, "/admin/models", token=ADMIN_TOKEN)[1]["models"]):
        assert time.monotonic() < deadline, "the second stream never started"
        time.sleep(0.1)
    status, reply = http(server, "/admin/unload_model", body={"model_id": "cpu-second"}, token=ADMIN_TOKEN)
    assert status == 409 and reply["code"] == "ERR1017"
    status, reply = http(server, "/admin/unload_model", body={"model_id": "cpu-second", "drain": True},
                         token=ADMIN_TOKEN)
    assert status == 202 and reply["status"] == "draining"
    with SttClient(server.address) as client, pytest.raises(SttError) as refused:
        client.create_session(model_id="cpu-second")
    assert refused.value.code == "ERR1011"
    status, reply = http(server, "/admin/unload_model", body={"model_id": "cpu-tiny.en"}, token=ADMIN_TOKEN)
    assert status == 409 and reply["code"] == "ERR1017", "the default model cannot be unloaded"

    second_thread.join(timeout=60)
    live_thread.join(timeout=60)
    assert not second_errors and not live_errors, (second_errors, live_errors)
    assert sentences.sentences[0].split()[1].lower() in finals_text([r for _, r in second]).lower(), \
        "the draining model finished its stream"
    models = http(server, "/admin/models", token=ADMIN_TOKEN)[1]["models"]
    assert [m["model_id"] for m in models] == ["cpu-tiny.en"], "unloaded once its last stream ended"
    # The live stream on the default model kept getting results during and after the load.
    assert any(t > loaded_at and r.is_final for t, r in live)
    assert len([r for _, r in live if r.is_final and r.text]) == len(sentences.sentences)


def test_degraded_decode_health_turns_grpc_health_not_serving_too(alsa_prompts):
    # Finals that wait more than 10 ms for the one decode slot time out: with min_events 1 and a
    # timeout ratio of 0 any timeout degrades the appliance. One slot means one replica (the
    # `default` profile; the `cpu` profile runs two) and no batching, or four finals all go at once.
    env = {"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0.01", "STT_HEALTH_MIN_EVENTS": "1",
           "STT_HEALTH_MAX_TIMEOUT_RATIO": "0", "STT_HTTP_RATE_LIMIT_RPS": "0",
           "STT_SERVER_MAX_DECODE_BATCH_SIZE": "1"}
    with InProcessAppliance("--profile", "default", env=env) as app:
        assert http(app, "/health")[0] == 200
        path = next(iter(alsa_prompts))
        errors: list = []
        threads = [_stream_in_thread(app, path, [], errors) for _ in range(4)]
        for thread in threads:
            thread.join(timeout=60)
        assert any(getattr(e, "code", None) == "ERR1009" for e in errors), errors
        status, health = http(app, "/health")
        assert status == 503 and health["status"] == "degraded" and health["decodes"]["timeouts"] >= 1
        deadline = time.monotonic() + 5
        while grpc_health(app) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "gRPC health did not follow /health"
            time.sleep(0.2)


def test_a_taken_http_port_stops_startup_with_a_clear_message(server):
    with pytest.raises(RuntimeError, match=r"exited with 1 before serving[\s\S]*cannot bind HTTP to 127.0.0.1:"):
        LocalAppliance("--metrics-port", str(server.http_port), startup_timeout_sec=60).start()
