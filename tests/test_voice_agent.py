"""A voice-agent framework's Deepgram plugin against the WebSocket door: Pipecat's DeepgramSTTService,
run as the agent developer runs it, in its own process and virtual environment (.venv-agents, made
by scripts/agents-venv.sh from tests/agents/requirements.txt; Pipecat needs protobuf<7, the
appliance's gRPC stubs protobuf 7). tests/agents/pipecat_listen.py builds the pipeline (Silero VAD ->
DeepgramSTTService(base_url=the box) -> a collector), plays the shipped JFK recording at 2x real time
and prints the interim and final transcriptions it got; a wrong key and wss:// with the operator's
certificate (the CA in SSL_CERT_FILE) are tried too. The recipe is in docs/voice-agents.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from clients.corpus import wer
from tests.conftest import serve_in_process
from tests.speech import COMMAND, COMMAND_TEXT, JFK, JFK_TEXT

REPO = Path(__file__).resolve().parent.parent
AGENTS_PYTHON = REPO / ".venv-agents" / "bin" / "python"
DRIVER = REPO / "tests" / "agents" / "pipecat_listen.py"
KEY = "agent-key"

pytestmark = pytest.mark.skipif(
    not AGENTS_PYTHON.exists(),
    reason=".venv-agents is missing: run scripts/agents-venv.sh (scripts/test.sh does) to install Pipecat")


@pytest.fixture(scope="module")
def keyed(request):
    """An appliance that takes one api key; its WebSocket door on a free loopback port (plain ws://)."""
    return serve_in_process(request, env={"STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "api_key",
                                          "STT_AUTH_ALLOWED_API_KEYS": KEY})


@pytest.fixture(scope="module")
def tls_server(request, tmp_path_factory):
    """An appliance with the operator's certificate: its WebSocket door serves wss:// only."""
    from tests.test_tls import make_self_signed

    certs = make_self_signed(tmp_path_factory.mktemp("agent-tls"), "server")
    return serve_in_process(request, "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key)), certs


def pipecat(base_url: str, *args: str, wav: Path = JFK, timeout_sec: float = 40.0,
            env: dict[str, str] | None = None) -> dict:
    """Run the Pipecat driver against the door at `base_url` and return what it printed."""
    done = subprocess.run([str(AGENTS_PYTHON), str(DRIVER), base_url, str(wav), "--timeout", str(timeout_sec), *args],
                          capture_output=True, text=True, timeout=timeout_sec + 20, env={**os.environ, **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"exit {done.returncode}, no result:\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_pipecat_deepgram_stt_streams_real_speech_with_interim_and_final_transcriptions(keyed):
    # At real time, as an agent hears a caller: at 2x, on a CI box running three test sessions, Pipecat's
    # Finalize at every 0.2 s pause closed each phrase before a partial's decode got a turn (partials
    # yield to finals under load by design), and no interim arrived.
    got = pipecat(keyed.websocket_url, "--api-key", KEY, "--pace", "1")
    text = " ".join(final["text"] for final in got["final"])
    assert not got["errors"], got
    assert got["interim"] and got["final"], got
    # Pipecat's VAD sends Finalize at each pause; the door answers with from_finalize, which Pipecat's
    # finalize bookkeeping (and its TTFB metric) waits for.
    assert any(final["from_finalize"] for final in got["final"]), got
    assert wer(JFK_TEXT, text) <= 0.25, text
    assert got["interim"][0]["at"] < got["final"][-1]["at"]


def test_pipecat_is_refused_with_a_wrong_key_and_stops_at_once(keyed):
    got = pipecat(keyed.websocket_url, "--api-key", "wrong-key", timeout_sec=20.0)
    assert not got["final"] and any("status 401" in error for error in got["errors"]), got
    assert got["seconds"] < 10, got  # a 4xx handshake: Pipecat gives up without retrying


def test_pipecat_over_wss_with_the_operators_certificate(tls_server):
    server, certs = tls_server
    got = pipecat(f"wss://127.0.0.1:{server.websocket_port}", wav=COMMAND, env={"SSL_CERT_FILE": str(certs.cert)})
    text = " ".join(final["text"] for final in got["final"])
    assert not got["errors"] and got["interim"], got
    assert wer(COMMAND_TEXT, text) <= 0.25, text
