"""Shared fixtures: real appliances on loopback ports (in this process unless the process itself is
under test), real recordings, the model cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from clients.audio import load_pcm16
from clients.local_server import LocalAppliance
from clients.sdk import SttClient, SttError, TimedResult
from tests import speech
from tests.helpers import PACK
from tests.inprocess import InProcessAppliance
from tests.markers import apply_markers


@pytest.hookimpl(tryfirst=True)  # before -m and -k deselect, so `-m "not slow"` sees the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    apply_markers(items)


def serve_in_process(request, *args: str, env: dict[str, str] | None = None) -> InProcessAppliance:
    """An appliance in this process with these `serve` arguments and STT_* settings; stopped (drained
    first, as SIGTERM would) when `request` finishes."""
    server = InProcessAppliance(*args, env=env)
    request.addfinalizer(server.stop)  # before start: a half-started one is stopped too
    return server.start()


def start_appliance(request, *args: str, env: dict[str, str] | None = None) -> LocalAppliance:
    """A separate appliance process with these arguments and STT_* variables; stopped when `request`
    finishes. Only for tests of the process itself (signals, exit codes, its log file, a crash)."""
    server = LocalAppliance(*args, env=env)
    server.start()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    return server


@pytest.fixture(scope="session")
def appliance_server(request) -> InProcessAppliance:
    """The appliance with the shipped configuration and the bundled model."""
    return serve_in_process(request)


@pytest.fixture(scope="session")
def tight_server(request) -> InProcessAppliance:
    """An appliance with short limits, for the timeout and buffer-cap paths."""
    return serve_in_process(request, env={"STT_SERVER_SESSION_TIMEOUT_SEC": "2", "STT_SERVER_MAX_BUFFER_SEC": "4"})


@pytest.fixture
def server_with(request):
    """Start an appliance with the given STT_* settings (keyword `server_max_sessions=2` is
    STT_SERVER_MAX_SESSIONS); stopped after the test."""

    def start(**settings) -> InProcessAppliance:
        return serve_in_process(request, env={f"STT_{k.upper()}": str(v) for k, v in settings.items()})

    return start


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


@pytest.fixture
def front_center_wav() -> Path:
    """Debian's spoken prompt "Front Center" (alsa-utils), as a file."""
    if not speech.FRONT_CENTER_WAV.is_file():
        pytest.skip(f"{speech.FRONT_CENTER_WAV} missing (Debian package alsa-utils)")
    return speech.FRONT_CENTER_WAV


@pytest.fixture(scope="module")
def prompt_audio() -> np.ndarray:
    """The "Front Center" prompt as the model's input: 16 kHz mono float32."""
    if not speech.FRONT_CENTER_WAV.exists():
        pytest.skip("Debian's alsa-utils prompts are not installed")
    return speech.alsa_prompt_16k("Front_Center.wav")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """STT_CACHE_DIR in tmp_path; returns where the verification cache file will be.

    Not autouse here: model-store modules opt in with `pytestmark = pytest.mark.usefixtures("isolated_cache")`.
    """
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("STT_CACHE_DIR", str(cache_root))
    return cache_root / "stt-appliance" / "verified.json"


@pytest.fixture(scope="module")
def pack_dir() -> Path:
    """The installed tiny.en pack's folder, found without resolve_model (which would write a cache)."""
    spec = importlib.util.find_spec(PACK.module)
    if spec is None:
        pytest.skip(f"the model pack is not installed: pip install '{PACK.distribution}'")
    return Path(next(iter(spec.submodule_search_locations))) / PACK.subdir


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
