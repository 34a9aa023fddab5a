"""`stt-appliance healthcheck`: GET /health on the operator plane's host and port; exit 0 when healthy.

Docker's HEALTHCHECK and compose run it inside the container, so the image needs no curl. It reads the
same config files and `STT_*` variables as `serve` (the port and bind address come from there) and sends
`$STT_OBSERVABILITY_TOKEN` as a bearer token when it is set. Exit 1 covers every failure: refused
connection, timeout, 503 (loading, degraded, draining) and a 200 whose body is not `"status": "ok"`.
/health lives on the operator plane (`server.metrics_port`), whose connection slots the OpenAI API's
clients (on `openai.port`) cannot use up, so a flood of uploads or slow clients does not fail it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from appliance.config import AppConfig

# A wildcard bind is reached through loopback from inside the same host or container.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}
# The server is local: an inherited http_proxy must not reroute the probe.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_url(config: AppConfig) -> str:
    host = (config.server.http_host or "").split(",")[0].strip()  # a list of binds: the first answers too
    host = _WILDCARD_TO_LOOPBACK.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{config.server.metrics_port}/health"


def check_health(url: str, token: str | None, timeout_sec: float) -> tuple[bool, str]:
    """(healthy, one line for the operator): healthy means HTTP 200 with `"status": "ok"`."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _NO_PROXY.open(request, timeout=timeout_sec) as response:
            code, body = response.status, response.read(65536)
    except urllib.error.HTTPError as err:  # 401/403/503...: the server answered, not healthy
        code, body = err.code, err.read(65536)
    except (OSError, ValueError) as err:  # refused, timed out, bad URL
        return False, f"{url}: {err}"
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        status = None
    return code == 200 and status == "ok", f"{url}: HTTP {code} status={status!r}"


def run(config: AppConfig, *, url: str | None = None, timeout_sec: float = 3.0) -> int:
    healthy, line = check_health(url or health_url(config), os.environ.get("STT_OBSERVABILITY_TOKEN") or None,
                                 timeout_sec)
    print(line)
    return 0 if healthy else 1
