"""The HTTP plane against broken or hostile requests: credentials it cannot parse and bodies too
large to read. Each is refused with a code and the `{code, message}` body, never a 500, and the
right credentials are still served afterwards. (Every route's auth and rate limit:
tests/test_http_routes.py.)"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from tests.test_http_plane import ADMIN_TOKEN, OBS_TOKEN, assert_error, plane

TOKENS = {"STT_OBSERVABILITY_TOKEN": OBS_TOKEN, "STT_ADMIN_TOKEN": ADMIN_TOKEN}
BAD_CREDENTIALS = [
    "Bearer caf\u00e9-token",  # non-ASCII (latin-1 on the wire)
    "Bearer " + OBS_TOKEN[:-1] + "\u00ff",
    "Bearer",  # no token
    "Basic dXNlcjpwYXNz",  # another scheme
    "Bearer " + "x" * 10_000,  # oversized
    "\u00e9\u00e9\u00e9",
]


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send `head` (request line and headers) and `body` as they are; the status and the reply body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("authorization", BAD_CREDENTIALS)
@pytest.mark.parametrize("path", ["/metrics", "/metrics.json", "/system", "/health", "/admin/models"])
def test_unusable_credentials_are_401_with_the_error_body(path, authorization, caplog):
    with plane(TOKENS) as p, caplog.at_level(logging.ERROR):
        status, _, body = p.request(path, headers={"Authorization": authorization})
        assert_error(status, body, 401, "ERR1004")
        status, _, body = p.request(path, token=ADMIN_TOKEN if path.startswith("/admin") else OBS_TOKEN)
        # the right token still works (/health of this model-less plane is 503 "degraded", in full)
        assert status == 200 or (path == "/health" and status == 503 and b"reasons" in body), (status, body)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's mistake"


def test_a_body_over_the_limit_is_refused_with_err1010():
    with plane(TOKENS) as p:
        body = json.dumps({"model_id": "x" * 100_000}).encode()
        status, _, reply = p.request("/admin/load_model", method="POST", token=ADMIN_TOKEN, body=body)
        assert_error(status, reply, 413, "ERR1010")
        assert b"limit" in reply


def test_a_huge_declared_body_is_refused_without_sending_it():
    with plane(TOKENS) as p:
        port = int(p.base.rsplit(":", 1)[1])
        status, _ = raw_request(port, "POST /admin/load_model HTTP/1.1\r\nHost: x\r\n"
                                      f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
                                      "Content-Length: 1000000000\r\nConnection: close")
        assert status == 413
        status, _, _ = p.request("/metrics.json", token=OBS_TOKEN)
        assert status == 200, "the plane keeps serving"
