"""Shared fixtures: real appliance processes on loopback ports and real recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.audio import load_pcm16
from clients.local_server import LocalAppliance
from clients.sdk import SttClient, SttError, TimedResult
from tests import speech


def _start(request, *args: str, env: dict[str, str] | None = None) -> LocalAppliance:
    server = LocalAppliance(*args, env=env)
    server.start()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    return server


@pytest.fixture(scope="session")
def appliance_server(request) -> LocalAppliance:
    """The appliance with the shipped configuration and the bundled model."""
    return _start(request)


@pytest.fixture(scope="session")
def tight_server(request) -> LocalAppliance:
    """An appliance with short limits, for the timeout and buffer-cap paths."""
    return _start(request, env={"STT_SERVER_SESSION_TIMEOUT_SEC": "2", "STT_SERVER_MAX_BUFFER_SEC": "4"})


@pytest.fixture
def server_with(request):
    """Start an appliance with the given STT_* settings; stopped after the test."""
    started = []

    def start(**settings) -> LocalAppliance:
        server = LocalAppliance(env={f"STT_{k.upper()}": str(v) for k, v in settings.items()}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def sentences(tmp_path_factory) -> speech.Speech:
    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    return speech.sentences_with_pauses(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def alsa_prompts() -> dict[Path, str]:
    prompts = {speech.ALSA_DIR / name: text for name, text in speech.ALSA_PROMPTS.items()}
    if not all(p.exists() for p in prompts):
        pytest.skip("Debian's alsa-utils prompts are not installed (apt-get install alsa-utils)")
    return prompts


def stream_file(address: str, path: Path, *, realtime: bool = False, chunk_ms: int = 100,
                **session_options) -> list[TimedResult]:
    """Stream one file through a fresh session and return every result."""
    pcm16, rate_hz = load_pcm16(path)
    with SttClient(address) as client:
        session = client.create_session(**session_options)
        return list(client.stream_audio(session, pcm16, rate_hz, chunk_ms=chunk_ms, realtime=realtime))


def expect_error(call) -> SttError:
    with pytest.raises(SttError) as info:
        call()
    return info.value


def finals_text(results: list[TimedResult]) -> str:
    return " ".join(r.text for r in results if r.is_final and r.text)
