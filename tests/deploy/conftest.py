"""Deploy fixtures: one private Docker engine and one build of images/cpu per test session.

The engine, the stand-in base image and the built appliance image are shared by the container,
compose and systemd tests (the build is the slow part); the engine and every container are stopped in
teardown. Without dockerd/debootstrap (apt-get install docker.io debootstrap) or root they skip, and
STT_DEPLOY_TESTS=0 skips them on request.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from clients.corpus import english_corpus
from tests.deploy.engine import DockerEngine, import_standin, missing_tools
from tests.speech import ALSA_DIR, ALSA_PROMPTS

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "stt-appliance:cpu"  # the tag compose.yaml's cpu service uses
FIGURES_FILE = Path(os.environ.get("STT_DEPLOY_CACHE", "/tmp/stt-deploy-cache")) / "figures.json"


def record_figure(name: str, value: float | str) -> None:
    """Keep a measured figure (image size, build time, cold start) for the closing report."""
    figures = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    figures[name] = value
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(figures, indent=1, sort_keys=True))
    print(f"[deploy figure] {name} = {value}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech_recording() -> tuple[Path, str]:
    """A short recording with its reference text: from ../shared/audio, else Debian's ALSA prompt."""
    for recording in english_corpus():
        if recording.path.name == "cmd_en_go_forward_ten_meters.wav":
            return recording.path, recording.reference
    prompt = ALSA_DIR / "Front_Center.wav"
    if prompt.exists():
        return prompt, ALSA_PROMPTS["Front_Center.wav"]
    pytest.skip("no recording: neither ../shared/audio nor alsa-utils' prompts are present")


@pytest.fixture(scope="session")
def docker_engine():
    if os.environ.get("STT_DEPLOY_TESTS") == "0":
        pytest.skip("STT_DEPLOY_TESTS=0: container builds skipped on request")
    missing = missing_tools()
    if missing:
        pytest.skip(f"no container engine here: {', '.join(missing)} missing (apt-get install docker.io debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("dockerd and debootstrap need root")
    engine = DockerEngine().start()
    try:
        import_standin(engine)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def appliance_image(docker_engine: DockerEngine) -> str:
    """images/cpu/Dockerfile built once, unchanged, against the stand-in base (no --pull)."""
    started = time.monotonic()
    docker_engine.run("build", "--network", "host", "-f", "images/cpu/Dockerfile", "-t", IMAGE, ".",
                      cwd=REPO_ROOT, timeout=900)
    record_figure("cpu_image_build_sec", round(time.monotonic() - started, 1))
    size = int(docker_engine.out("image", "inspect", "-f", "{{.Size}}", IMAGE))
    base = int(docker_engine.out("image", "inspect", "-f", "{{.Size}}", "python:3.11-slim-bookworm"))
    record_figure("cpu_image_size_mb", round(size / 1e6))
    record_figure("cpu_image_layers_over_base_mb", round((size - base) / 1e6))
    return IMAGE
