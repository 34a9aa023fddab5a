"""The OpenAPI documents stay true: each plane's names exactly its app's routes, and schemathesis fuzzes
each plane of the running appliance against its own document (every response's status, content type
and body must match)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import falcon.inspect
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from appliance.config import load_config
from appliance.file_transcriber import FileTranscriber
from appliance.runtime import Runtime
from appliance.security.http_access import HttpAccess, HttpAccessSettings
from appliance.transport.http.app import create_app, create_client_app
from appliance.transport.http.openai import openai_routes
from appliance.transport.http.openapi import openapi_document
from tests.inprocess import InProcessAppliance

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "fuzz-token"  # both the observability and the admin token, so one header opens everything


def routes_of(app) -> set[tuple[str, str]]:
    return {(route.path, method.method.lower())
            for route in falcon.inspect.inspect_routes(app)
            for method in route.methods if not method.internal}


def documented(plane: str) -> set[tuple[str, str]]:
    return {(path, method) for path, item in openapi_document(plane)["paths"].items() for method in item}


def test_openapi_names_exactly_the_routes_and_methods_of_the_app():
    config = load_config(env={})
    runtime = Runtime(config)
    loop = asyncio.new_event_loop()
    try:
        access = HttpAccess(HttpAccessSettings.from_config(config.server, environ={}))
        transcriber = FileTranscriber(runtime.sessions, loop, max_concurrent=1, timeout_sec=1)
        routes = openai_routes(transcriber, runtime.admin, signed_tokens=False, max_body_bytes=1024)
        both = routes_of(create_app(runtime.status, runtime.admin, access, routes))
        operator = routes_of(create_app(runtime.status, runtime.admin, access, client_port=8001))
        client = routes_of(create_client_app(runtime.status, access, routes, operator_port=8000))
    finally:
        loop.close()
        runtime.close()
    assert both == documented("all")
    assert operator == documented("operator"), "each plane's document names exactly its own routes"
    assert client == documented("client")
    assert operator | client == both


@pytest.fixture(scope="module")
def fuzz_server(request, tmp_path_factory) -> InProcessAppliance:
    # The default load profile names a model that is not installed: fuzzed load requests are refused
    # (ERR1010) instead of loading dozens of real models; the success path is in test_http_e2e.py.
    model_config = yaml.safe_load((ROOT / "config" / "model.yaml").read_text())
    model_config["model_load_profiles"]["not-installed"] = {"model_size": "/nonexistent/whisper-model"}
    model_config["model"]["default_model_load_profile"] = "not-installed"
    path = tmp_path_factory.mktemp("fuzz") / "model.yaml"
    path.write_text(yaml.safe_dump(model_config))
    app = InProcessAppliance("--model-config", str(path),
                             env={"STT_OBSERVABILITY_TOKEN": TOKEN, "STT_ADMIN_TOKEN": TOKEN,
                                  "STT_HTTP_RATE_LIMIT_RPS": "0", "STT_OPENAI_PORT": "0"})
    request.addfinalizer(app.stop)
    return app.start()


def plane_url(app: InProcessAppliance, plane: str) -> str:
    """The operator plane (metrics_port) or the client plane (openai.port)."""
    if plane == "operator":
        return app.http_url
    return f"http://127.0.0.1:{app.openai_port}"


@pytest.mark.parametrize("plane", ["operator", "client"])
def test_running_appliance_conforms_to_its_openapi_document(fuzz_server, plane):
    schema = schemathesis.openapi.from_url(plane_url(fuzz_server, plane) + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = {op.path for op in operations}
    assert fuzzed == set(openapi_document(plane)["paths"]) - {"/openapi.json"}  # schemathesis skips the document
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case):
            # A schema-valid body may still name a profile or model this appliance lacks: the error
            # contract says ERR1010 / HTTP 400 for that, so "valid data must be accepted" cannot apply.
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                                   excluded_checks=[positive_data_acceptance])

        conforms()
