"""images/cuda/Dockerfile, unchanged, built against a stand-in tagged with its real base name (no CUDA
image can be pulled here) and run without a GPU: the structure (stages, venv, user, volumes, env,
HEALTHCHECK) is checked for real, and the pinned nvidia_cuda profile falls back to the CPU with a
warning instead of failing, so the container still reaches "healthy". The GPU path itself needs an
NVIDIA host (hwtests/). The Jetson Dockerfile (arm64, builds CTranslate2 with CUDA) is linted only.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.deploy.conftest import REPO_ROOT, record_figure
from tests.deploy.engine import DockerEngine, import_standin
from tests.deploy.test_container import wait_healthy

CUDA_DOCKERFILE = (REPO_ROOT / "images/cuda/Dockerfile").read_text()
CUDA_BASE = re.search(r"^ARG CUDA_IMAGE=(\S+)$", CUDA_DOCKERFILE, re.MULTILINE).group(1)


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_cuda_image_structure_and_cpu_fallback(docker_engine: DockerEngine):
    engine, image, name = docker_engine, "stt-appliance:cuda", "stt-deploy-cuda"
    import_standin(engine, CUDA_BASE)
    started = time.monotonic()
    engine.run("build", "--network", "host", "-f", "images/cuda/Dockerfile", "-t", image, ".", cwd=REPO_ROOT,
               timeout=900)
    record_figure("cuda_image_build_on_standin_sec", round(time.monotonic() - started, 1))
    config = json.loads(engine.out("image", "inspect", "-f", "{{json .Config}}", image))
    assert config["User"] == "10001:10001"
    assert "STT_MODEL_PROFILE=nvidia_cuda" in config["Env"]
    # gRPC, operator, OpenAI, the WebSocket door, Wyoming (on in the image: STT_WYOMING_PORT)
    assert set(config["ExposedPorts"]) == {"50051/tcp", "8000/tcp", "8001/tcp", "8002/tcp", "10300/tcp"}
    assert "STT_WYOMING_PORT=10300" in config["Env"]
    assert set(config["Volumes"]) == {"/etc/stt-appliance", "/var/lib/stt-appliance", "/models"}
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "stt-appliance", "healthcheck"]
    try:
        engine.run("run", "--detach", "--name", name, "--network", "none", image)
        wait_healthy(engine, name)
        logs = engine.run("logs", name).stderr.decode(errors="replace")
        # pinned nvidia_cuda, no GPU here: a WARNING names the fallback, and the model runs on the CPU
        assert re.search(r"HARDWARE FALLBACK: profile 'nvidia_cuda' wants \S+ on cuda", logs), logs[-2000:]
        assert re.search(r"hardware \w+: profile \S+ -> model \S+, \w+ on cpu,", logs), logs[-2000:]
        engine.run("stop", "--time", "45", name, timeout=120)
        assert engine.out("inspect", "-f", "{{.State.ExitCode}}", name) == "0"
    finally:
        engine.run("rm", "-f", "-v", name, check=False)
