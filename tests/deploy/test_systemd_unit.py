"""systemd/stt-appliance.service under real systemd (PID 1 of a container): Type=notify reaches "active"
on READY=1, the watchdog stays fed, a killed process is restarted, a stalled one is killed by the
watchdog and restarted, and `systemctl stop` drains to a clean exit.

This VM's capability bounding set lacks CAP_SYS_RESOURCE, so `--privileged` (which asks for every
capability) fails in runc; the container gets every capability the VM has, no seccomp/AppArmor
profile, all devices and a writable cgroup tree instead, which is what systemd and the unit's
sandboxing (DynamicUser, PrivateUsers, PrivateDevices, ProtectSystem...) need.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT
from tests.deploy.engine import BASE_IMAGE, DockerEngine

UNIT = "stt-appliance.service"
HOST_IMAGE = "stt-systemd-host:test"
CONTAINER = "stt-deploy-systemd"
SYSTEMD_RUN_FLAGS = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                     "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
                     "--device-cgroup-rule", "a *:* rwm", "--cgroupns", "host",
                     "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"]


@pytest.fixture(scope="module")
def systemd_host(docker_engine: DockerEngine, appliance_image: str):
    with tempfile.TemporaryDirectory(prefix="stt-systemd-ctx-") as context:
        ctx = Path(context)
        shutil.copytree(REPO_ROOT / "config", ctx / "config")
        shutil.copytree(REPO_ROOT / "systemd", ctx / "systemd")
        for name in ("Dockerfile", "test-dropin.conf"):
            shutil.copy(Path(__file__).parent / "systemd_host" / name, ctx / name)
        docker_engine.run("build", "--network", "host", "--build-arg", f"APPLIANCE_IMAGE={appliance_image}",
                          "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", HOST_IMAGE, ".", cwd=ctx, timeout=600)
    docker_engine.run("run", "--detach", "--name", CONTAINER, "--network", "none", *SYSTEMD_RUN_FLAGS, HOST_IMAGE)
    try:
        yield docker_engine
    finally:
        docker_engine.run("rm", "-f", "-v", CONTAINER, check=False)


def show(engine: DockerEngine, *properties: str) -> dict[str, str]:
    result = engine.run("exec", CONTAINER, "systemctl", "show", UNIT, *(f"--property={p}" for p in properties),
                        check=False)
    return dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)


def wait_for(engine: DockerEngine, predicate, what: str, timeout_sec: float = 90) -> dict[str, str]:
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        state = show(engine, "ActiveState", "SubState", "Result", "StatusText", "NRestarts", "MainPID",
                     "WatchdogTimestampMonotonic", "ExecMainStatus")
        if state and predicate(state):
            return state
        time.sleep(0.5)
    journal = engine.run("exec", CONTAINER, "journalctl", "-u", UNIT, "--no-pager", check=False).stdout
    pytest.fail(f"{what} not reached within {timeout_sec} s: {state}\n{journal.decode(errors='replace')[-3000:]}")


def serving(state: dict[str, str]) -> bool:
    return state["ActiveState"] == "active" and state["StatusText"].startswith("serving")


@pytest.mark.timeout(1200)  # includes the session's stand-in + image build
def test_unit_is_active_on_ready_fed_by_the_watchdog_and_restarted(systemd_host: DockerEngine):
    engine = systemd_host
    # Type=notify: "active" only comes with READY=1, which carries the STATUS= line
    first = wait_for(engine, serving, "active with READY=1")
    uid = int(engine.out("exec", CONTAINER, "stat", "-c", "%u", f"/proc/{first['MainPID']}"))
    assert 61184 <= uid <= 65519, f"DynamicUser: expected a transient uid, the service runs as {uid}"

    # WatchdogSec=4s: alive 10 s later, same process, pings moving the watchdog timestamp
    stamps = {show(engine, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]}
    time.sleep(10)
    stamps.add(show(engine, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
    later = show(engine, "ActiveState", "MainPID", "NRestarts")
    assert later == {"ActiveState": "active", "MainPID": first["MainPID"], "NRestarts": "0"}, later
    assert len(stamps) == 2, "the watchdog timestamp did not move: no WATCHDOG=1 pings"

    # killed -> Restart=on-failure brings it back, serving again, in a new process
    engine.run("exec", CONTAINER, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", UNIT)
    wait_for(engine, lambda s: serving(s) and s["NRestarts"] == "1" and s["MainPID"] != first["MainPID"],
             "restart after SIGKILL")

    # a stalled event loop stops the pings: the watchdog kills it and systemd restarts it
    engine.run("exec", CONTAINER, "systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)
    wait_for(engine, lambda s: serving(s) and s["NRestarts"] == "2", "restart after a watchdog timeout", 60)
    journal = engine.out("exec", CONTAINER, "journalctl", "-u", UNIT, "--no-pager")
    assert "Watchdog timeout" in journal

    # systemctl stop: SIGTERM drains (STOPPING=1) and the process exits 0 well within TimeoutStopSec
    started = time.monotonic()
    engine.run("exec", CONTAINER, "systemctl", "stop", UNIT, timeout=120)
    stopped = show(engine, "ActiveState", "Result", "ExecMainStatus")
    assert stopped == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, stopped
    assert time.monotonic() - started < 30
