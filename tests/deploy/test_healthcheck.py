"""`stt-appliance healthcheck` (the image's HEALTHCHECK) against a real appliance's HTTP /health."""

from __future__ import annotations

import os
import subprocess
import sys

from appliance.config import load_config
from appliance.healthcheck import health_url
from tests.deploy.conftest import REPO_ROOT, free_port
from tests.inprocess import InProcessAppliance


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STT_")}
    return subprocess.run([sys.executable, "-m", "appliance", "healthcheck"], cwd=REPO_ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_health_url_reaches_a_wildcard_bind_through_loopback():
    def url(host: str) -> str:
        return health_url(load_config(overrides={"server.http_host": host, "server.metrics_port": 8123}, env={}))

    assert url("0.0.0.0") == "http://127.0.0.1:8123/health"
    assert url("::") == "http://[::1]:8123/health"
    assert url("10.1.2.3") == "http://10.1.2.3:8123/health"
    assert url("*") == "http://127.0.0.1:8123/health"  # every address, IPv4 and IPv6
    assert url("127.0.0.1,::1") == "http://127.0.0.1:8123/health"  # a list of binds: the first


def test_health_url_is_the_operator_plane_whatever_the_openai_api_binds():
    config = load_config(overrides={"server.http_host": "127.0.0.1", "server.metrics_port": 8123,
                                    "openai.host": "0.0.0.0", "openai.port": 8124}, env={})
    assert health_url(config) == "http://127.0.0.1:8123/health"


def test_healthcheck_follows_the_configured_port_and_token():
    token = "deploy-test-token"
    with InProcessAppliance(env={"STT_OBSERVABILITY_TOKEN": token}) as server:
        # the same STT_* settings the server runs with (how the container's HEALTHCHECK gets them)
        env = {"STT_SERVER_METRICS_PORT": str(server.http_port), "STT_SERVER_HTTP_HOST": "0.0.0.0"}
        ok = healthcheck({**env, "STT_OBSERVABILITY_TOKEN": token})
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "HTTP 200" in ok.stdout
        refused = healthcheck(env)  # no token: the server answers 401, which is not healthy
        assert refused.returncode == 1 and "HTTP 401" in refused.stdout, refused.stdout
    gone = healthcheck({"STT_SERVER_METRICS_PORT": str(free_port())})
    assert gone.returncode == 1 and "refused" in gone.stdout.lower(), gone.stdout
