"""The HTTP plane's routes and security knobs, over real HTTP to a real waitress server.

The runtime here is real but has loaded no model (its lifecycle is what each test sets), which makes
every security knob cheap to test in its own server. Streams and admin loads against a serving
appliance are in test_http_e2e.py.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.error
import urllib.request
from contextlib import contextmanager
from email.message import Message

import pytest

from appliance.config import load_config
from appliance.config_schema import ModelLoadProfile
from appliance.models.registry import LoadedModel
from appliance.observability.health import Outcome
from appliance.runtime import Lifecycle, Runtime
from appliance.security.http_access import HttpAccess, HttpAccessSettings
from appliance.transport.http.app import create_app
from appliance.transport.http.planes import HttpPlanes, PlaneError
from appliance.transport.http.server import HttpServer

OBS_TOKEN = "obs-secret-token"
ADMIN_TOKEN = "admin-secret-token"


class Plane:
    def __init__(self, runtime: Runtime, server: HttpServer):
        self.runtime = runtime
        self.base = f"http://127.0.0.1:{server.port}"

    def request(self, path: str, *, method: str = "GET", token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
        req = urllib.request.Request(self.base + path, method=method, data=body, headers=dict(headers or {}))
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def json(self, path: str, **kwargs) -> tuple[int, dict]:
        status, _, body = self.request(path, **kwargs)
        return status, json.loads(body)


@contextmanager
def plane(env: dict[str, str] | None = None, *, state: Lifecycle = Lifecycle.SERVING, **server_overrides):
    """A real waitress server on a free loopback port in front of an unloaded runtime."""
    overrides = {"server.http_rate_limit_rps": 0.0, **{f"server.{k}": v for k, v in server_overrides.items()}}
    config = load_config(overrides=overrides, env={})
    runtime = Runtime(config)
    runtime.health.set_state(state)
    access = HttpAccess(HttpAccessSettings.from_config(config.server, environ=env or {}))
    server = HttpServer(create_app(runtime.status, runtime.admin, access), "127.0.0.1", 0).start()
    try:
        yield Plane(runtime, server)
    finally:
        server.stop()
        runtime.close()


def assert_error(status: int, body: bytes | dict, expected_status: int, code: str) -> None:
    payload = json.loads(body) if isinstance(body, bytes) else body
    assert status == expected_status, payload
    assert set(payload) == {"code", "message"} and payload["code"] == code and payload["message"], payload


# --- routes -------------------------------------------------------------------------------------


def test_health_is_503_while_starting_and_draining_and_names_why():
    with plane(state=Lifecycle.STARTING) as p:
        status, body = p.json("/health")
        assert status == 503 and body["status"] == "starting" and body["reasons"]
        p.runtime.health.set_state(Lifecycle.DRAINING)
        status, body = p.json("/health")
        assert status == 503 and body["status"] == "draining"


def test_health_degrades_when_decodes_time_out_and_recovers_with_the_window():
    clock = [1000.0]
    with plane(state=Lifecycle.SERVING) as p:
        # A registry entry without a backend: health only counts models, nothing decodes here.
        p.runtime.models._models["cpu-tiny.en"] = LoadedModel("cpu-tiny.en", None, "default", ModelLoadProfile(),
                                                              "test", 0.0)
        p.runtime.health.decode_health._clock = lambda: clock[0]
        for _ in range(4):
            p.runtime.health.decode_health.record(Outcome.TIMEOUT)
        status, body = p.json("/health")
        assert status == 200 and body["status"] == "ok", "fewer than health.min_events (5) say nothing"
        p.runtime.health.decode_health.record(Outcome.SUCCESS)
        status, body = p.json("/health")
        assert status == 503 and body["status"] == "degraded"
        assert any("timed out" in r for r in body["reasons"]) and body["decodes"]["timeouts"] == 4
        clock[0] += 61  # past health.window_sec: the bad minute is forgotten
        status, body = p.json("/health")
        assert status == 200 and body["status"] == "ok" and body["decodes"]["events"] == 0


def test_health_is_degraded_when_no_model_is_loaded():
    with plane(state=Lifecycle.SERVING) as p:
        status, body = p.json("/health")
        assert status == 503 and body["status"] == "degraded" and "no model is loaded" in body["reasons"]


def test_metrics_json_system_and_openapi_answer_with_their_shapes():
    with plane() as p:
        status, _, text = p.request("/metrics")
        assert status == 200 and b"# TYPE stt_active_sessions gauge" in text
        status, snapshot = p.json("/metrics.json")
        assert status == 200 and snapshot["sessions"]["max"] == 50 and snapshot["state"] == "serving"
        status, system = p.json("/system")
        assert status == 200 and system["platform"]["cpu_count"] >= 1 and "ctranslate2" in system["versions"]
        status, spec = p.json("/openapi.json")
        assert status == 200 and spec["openapi"].startswith("3.") and "/health" in spec["paths"]


def test_status_page_and_its_assets_are_served_by_the_app_with_a_self_only_policy():
    with plane() as p:
        status, headers, html = p.request("/")
        assert status == 200 and b"/static/status.js" in html
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert b"http://" not in html and b"https://" not in html, "no CDN: the appliance is offline"
        for asset in ("/static/status.js", "/static/status.css"):
            status, _, data = p.request(asset)
            assert status == 200 and data and b"https://" not in data


def test_unknown_routes_and_methods_get_the_stable_error_format():
    with plane() as p:
        status, _, body = p.request("/nope")
        assert_error(status, body, 404, "ERR1018")
        status, headers, body = p.request("/health", method="DELETE")
        assert_error(status, body, 405, "ERR1018")
        assert "GET" in headers.get("Allow", "")


# --- security knobs -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/metrics.json", "/system", "/health"])
def test_observability_token_guards_each_observability_route(path):
    with plane({"STT_OBSERVABILITY_TOKEN": OBS_TOKEN}) as p:
        status, headers, body = p.request(path)
        assert_error(status, body, 401, "ERR1004")
        assert headers.get("WWW-Authenticate") == "Bearer"
        status, _, body = p.request(path, token="wrong")
        assert_error(status, body, 401, "ERR1004")
        status, _, _ = p.request(path, token=OBS_TOKEN)
        assert status in (200, 503)  # /health: 503 since no model is loaded here


def test_public_health_minimal_gives_only_the_status_without_a_token():
    with plane({"STT_OBSERVABILITY_TOKEN": OBS_TOKEN, "STT_PUBLIC_HEALTH": "minimal"},
               state=Lifecycle.STARTING) as p:
        status, body = p.json("/health")
        assert status == 503 and body == {"status": "starting"}
        status, body = p.json("/health", token=OBS_TOKEN)
        assert status == 503 and body["status"] == "starting" and "decodes" in body
        status, _, body = p.request("/metrics")
        assert_error(status, body, 401, "ERR1004")


def test_health_detail_mode_token_hides_details_even_without_an_observability_token():
    with plane({"STT_HEALTH_DETAIL_MODE": "token"}, state=Lifecycle.STARTING) as p:
        status, body = p.json("/health")
        assert status == 503 and body == {"status": "starting"}
    with plane({"STT_HEALTH_DETAIL_MODE": "token", "STT_OBSERVABILITY_TOKEN": OBS_TOKEN},
               state=Lifecycle.STARTING) as p:
        assert p.json("/health")[1] == {"status": "starting"}
        assert "reasons" in p.json("/health", token=OBS_TOKEN)[1]


def test_allowlist_refuses_other_addresses_and_trusted_proxies_decide_forwarded_for():
    with plane({"STT_HTTP_ALLOWLIST": "10.0.0.0/8"}) as p:
        status, _, body = p.request("/openapi.json")
        assert_error(status, body, 403, "ERR1005")
        status, _, body = p.request("/openapi.json", headers={"X-Forwarded-For": "10.1.2.3"})
        assert_error(status, body, 403, "ERR1005")  # 127.0.0.1 is no trusted proxy: the header is ignored
    with plane({"STT_HTTP_ALLOWLIST": "10.0.0.0/8"}, http_trusted_proxies=["127.0.0.1/32"]) as p:
        status, _, _ = p.request("/openapi.json", headers={"X-Forwarded-For": "10.1.2.3"})
        assert status == 200
        status, _, body = p.request("/openapi.json", headers={"X-Forwarded-For": "10.1.2.3, 192.0.2.7"})
        assert_error(status, body, 403, "ERR1005")  # the right-most untrusted hop is the client
        status, _, body = p.request("/openapi.json")
        assert_error(status, body, 403, "ERR1005")


def test_http_rate_limit_refuses_with_retry_after_per_client():
    with plane(http_rate_limit_rps=1.0, http_rate_limit_burst=3.0, http_trusted_proxies=["127.0.0.1/32"]) as p:
        statuses = [p.request("/openapi.json")[0] for _ in range(3)]
        assert statuses == [200, 200, 200]
        status, headers, body = p.request("/openapi.json")
        assert_error(status, body, 429, "ERR1006")
        assert int(headers["Retry-After"]) >= 1
        status, _, _ = p.request("/openapi.json", headers={"X-Forwarded-For": "198.51.100.9"})
        assert status == 200, "another client (via a trusted proxy) has its own bucket"


def test_admin_plane_is_disabled_without_a_token_and_refuses_wrong_tokens():
    with plane() as p:
        status, _, body = p.request("/admin/models", token="anything")
        assert_error(status, body, 403, "ERR1005")
    with plane({"STT_ADMIN_TOKEN": ADMIN_TOKEN, "STT_OBSERVABILITY_TOKEN": OBS_TOKEN}) as p:
        status, _, body = p.request("/admin/models")
        assert_error(status, body, 401, "ERR1004")
        status, _, body = p.request("/admin/models", token=OBS_TOKEN)
        assert_error(status, body, 401, "ERR1004")
        status, listing = p.json("/admin/models", token=ADMIN_TOKEN)
        assert status == 200 and "default" in listing["profiles"] and listing["models"] == []


def test_admin_requests_with_bad_bodies_get_err1010_and_unknown_models_err1011():
    with plane({"STT_ADMIN_TOKEN": ADMIN_TOKEN}) as p:
        for body in (b"{not json", b"[1, 2]", b'{"profile_id": 5}', b'{"bogus": 1}', b'{"model_id": "../x"}',
                     b'{"profile_id": "no-such-profile"}'):
            status, _, reply = p.request("/admin/load_model", method="POST", token=ADMIN_TOKEN, body=body)
            assert_error(status, reply, 400, "ERR1010")
        status, _, reply = p.request("/admin/load_model", method="POST", token=ADMIN_TOKEN,
                                     body=b'{"model_size": "small"}')
        assert_error(status, reply, 400, "ERR1010")  # small is not usable from the package index
        status, _, reply = p.request("/admin/unload_model", method="POST", token=ADMIN_TOKEN,
                                     body=b'{"model_id": "cpu-nothing"}')
        assert_error(status, reply, 404, "ERR1011")
        status, _, reply = p.request("/admin/unload_model", method="POST", token=ADMIN_TOKEN, body=b"{}")
        assert_error(status, reply, 400, "ERR1010")


def test_admin_load_is_refused_when_the_model_would_not_fit_the_memory_budget():
    with plane({"STT_ADMIN_TOKEN": ADMIN_TOKEN}, memory_budget_bytes=64 * 2**20) as p:
        status, _, reply = p.request("/admin/load_model", method="POST", token=ADMIN_TOKEN,
                                     body=b'{"model_size": "base", "model_id": "cpu-base"}')
        assert_error(status, reply, 503, "ERR1014")
        assert b"memory budget" in reply and p.runtime.models.get("cpu-base") is None


def test_bad_access_settings_are_refused_by_name():
    config = load_config(env={})
    with pytest.raises(ValueError, match="STT_HTTP_ALLOWLIST"):
        HttpAccessSettings.from_config(config.server, environ={"STT_HTTP_ALLOWLIST": "not-a-network"})
    with pytest.raises(ValueError, match="STT_PUBLIC_HEALTH"):
        HttpAccessSettings.from_config(config.server, environ={"STT_PUBLIC_HEALTH": "full"})


# --- the two planes -------------------------------------------------------------------------------


@contextmanager
def planes(**overrides):
    """Both HTTP planes on free loopback ports in front of an unloaded runtime (nothing is uploaded)."""
    settings = {"server.metrics_port": 0, "openai.port": 0, "server.http_rate_limit_rps": 0.0, **overrides}
    config = load_config(overrides=settings, env={})
    runtime = Runtime(config)
    runtime.health.set_state(Lifecycle.SERVING)
    loop = asyncio.new_event_loop()
    both = HttpPlanes(config, runtime, loop).start()
    try:
        yield both
    finally:
        both.stop()
        runtime.close()
        loop.close()


def fetch(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw_answer(port: int) -> bytes:
    """What a fresh connection is told before it sends anything."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        return conn.recv(4096)


def test_each_plane_serves_its_routes_and_names_the_port_of_the_others():
    with planes() as p:
        assert p.client_port and p.client_port != p.operator_port
        status, body = fetch(p.client_port, "/v1/models")
        assert status == 200 and body == {"object": "list", "data": []}
        status, body = fetch(p.operator_port, "/v1/models")
        assert status == 404 and body["code"] == "ERR1018" and f"port {p.client_port} (openai.port)" in body["message"]
        assert body["error"]["code"] == "ERR1018", "OpenAI clients read the error object"
        for path in ("/health", "/metrics", "/admin/models"):
            status, body = fetch(p.client_port, path)
            assert status == 404 and f"port {p.operator_port} (server.metrics_port)" in body["message"], body
        status, body = fetch(p.operator_port, "/health")
        assert status == 503 and body["status"] == "degraded"  # no model: but the operator plane answers
        _, operator_doc = fetch(p.operator_port, "/openapi.json")
        _, client_doc = fetch(p.client_port, "/openapi.json")
        assert "/health" in operator_doc["paths"] and not any(k.startswith("/v1") for k in operator_doc["paths"])
        assert set(client_doc["paths"]) == {"/openapi.json", "/v1/audio/transcriptions", "/v1/audio/translations",
                                            "/v1/models", "/v1/models/{model_id}"}


def test_the_client_plane_refuses_new_connections_while_draining_and_the_operator_plane_answers():
    with planes() as p:
        p.operator.door.drain.check()  # the operator plane's gate is its own
        runtime_gate = p.client.door.drain
        runtime_gate.close()
        refusal = raw_answer(p.client_port)
        assert refusal.startswith(b"HTTP/1.1 503") and b"ERR1015" in refusal and b"Retry-After" in refusal
        status, body = fetch(p.operator_port, "/health")
        assert status == 503 and "status" in body


def test_one_address_gets_its_share_of_a_plane_and_a_coded_refusal_past_it():
    with planes(**{"server.http_max_connections": 4, "server.http_max_connections_per_address": 2,
                   "openai.max_connections": 4, "openai.max_connections_per_address": 2}) as p:
        for port, key in ((p.operator_port, b"server.http_max_connections_per_address=2"),
                          (p.client_port, b"openai.max_connections_per_address=2")):
            held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
            try:
                refusal = raw_answer(port)
                assert refusal.startswith(b"HTTP/1.1 503") and b"ERR1007" in refusal and key in refusal, refusal
            finally:
                for conn in held:
                    conn.close()


def test_the_allowlist_closes_both_planes_to_other_addresses(monkeypatch):
    monkeypatch.setenv("STT_HTTP_ALLOWLIST", "10.0.0.0/8")
    with planes() as p:
        for port in (p.operator_port, p.client_port):
            refusal = raw_answer(port)
            assert refusal.startswith(b"HTTP/1.1 403") and b"ERR1005" in refusal and b"STT_HTTP_ALLOWLIST" in refusal


def test_the_two_planes_cannot_share_a_port():
    config = load_config(overrides={"server.metrics_port": 18123, "openai.port": 18123}, env={})
    runtime = Runtime(config)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(PlaneError, match="port of its own"):
            HttpPlanes(config, runtime, loop)
    finally:
        runtime.close()
        loop.close()


def test_each_plane_has_its_own_rate_limit_bucket_and_believes_only_trusted_proxies():
    with planes(**{"server.http_rate_limit_rps": 1.0, "server.http_rate_limit_burst": 2.0,
                   "server.http_trusted_proxies": ["127.0.0.1"]}) as p:
        for _ in range(2):
            assert fetch(p.client_port, "/v1/models")[0] == 200
        status, body = fetch(p.client_port, "/v1/models")
        assert status == 429 and body["code"] == "ERR1006"
        assert fetch(p.operator_port, "/openapi.json")[0] == 200, "the operator plane's bucket is its own"
        # Behind the trusted proxy (127.0.0.1) each forwarded client has a bucket of its own.
        forwarded = urllib.request.Request(f"http://127.0.0.1:{p.client_port}/v1/models",
                                           headers={"X-Forwarded-For": "10.9.8.7"})
        with urllib.request.urlopen(forwarded, timeout=10) as reply:
            assert reply.status == 200


def test_an_upload_on_a_connection_opened_before_the_drain_is_refused_with_err1015():
    with planes() as p:
        conn = http.client.HTTPConnection("127.0.0.1", p.client_port, timeout=10)
        try:
            conn.request("GET", "/v1/models")
            assert conn.getresponse().read() and p.client.door.open_connections == 1
            p.client.door.drain.close()  # the runtime's drain gate
            body = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n--zz--\r\n'
            conn.request("POST", "/v1/audio/transcriptions", body=body,
                         headers={"Content-Type": "multipart/form-data; boundary=zz"})
            reply = conn.getresponse()
            answer = json.loads(reply.read())
            assert reply.status == 503 and answer["code"] == "ERR1015" and reply.getheader("Retry-After"), answer
        finally:
            conn.close()
