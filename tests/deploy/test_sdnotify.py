"""sd_notify from a real appliance process: READY=1 once serving, WATCHDOG=1 at half of WATCHDOG_USEC,
STOPPING=1 on SIGTERM. The test plays systemd's part by binding its own datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from appliance.observability.sdnotify import (
    SystemdNotifier,
    socket_address,
    watchdog_interval_sec,
)
from clients.local_server import LocalAppliance


class NotifySocket:
    """What systemd listens on: a unix datagram socket, abstract (`@name`) or a path."""

    def __init__(self, path: Path | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = str(path) if path else f"@stt-test-{uuid.uuid4().hex}"
        self.sock.bind(socket_address(self.name))
        self.messages: list[tuple[float, str]] = []

    def receive_until(self, wanted: str, timeout_sec: float) -> list[str]:
        """Collect messages until one holds the line `wanted`; fail when none does in time."""
        deadline = time.monotonic() + timeout_sec
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data))
            if wanted in data.splitlines():
                return data.splitlines()
        pytest.fail(f"no {wanted} within {timeout_sec} s; got {[m for _, m in self.messages]}")

    def close(self) -> None:
        self.sock.close()


def test_notify_socket_address_and_watchdog_interval():
    assert socket_address("@systemd/notify") == b"\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert watchdog_interval_sec({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval_sec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None  # not ours
    assert watchdog_interval_sec({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval_sec({}, pid=7) is None


def test_without_notify_socket_every_call_is_a_no_op():
    notifier = SystemdNotifier(env={"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog_interval_sec is None
    assert notifier.ready("x") is False and notifier.watchdog() is False


def test_path_socket_and_a_vanished_manager(tmp_path):
    listener = NotifySocket(tmp_path / "notify")
    notifier = SystemdNotifier(env={"NOTIFY_SOCKET": listener.name})
    assert notifier.status("loading") is True
    assert listener.receive_until("STATUS=loading", 2)
    listener.close()
    os.unlink(tmp_path / "notify")
    assert notifier.watchdog() is False  # logged, never raised: systemd going away must not kill us
    notifier.close()


def test_real_appliance_sends_ready_watchdog_and_stopping():
    listener = NotifySocket()  # abstract, as systemd's own socket is
    server = LocalAppliance(env={"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "1000000"})
    try:
        server.start()
        ready = listener.receive_until("READY=1", 30)
        assert any(line.startswith("STATUS=serving") for line in ready), ready
        assert listener.messages[0][1].startswith("STATUS=loading model")  # before READY
        ready_at = listener.messages[-1][0]
        for _ in range(3):
            listener.receive_until("WATCHDOG=1", 3)
        pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
        # every half WATCHDOG_USEC (0.5 s), from the event loop
        assert 0.3 < (pings[-1] - pings[0]) / (len(pings) - 1) < 0.8, pings
        assert pings[0] - ready_at < 1.0
        assert server.stop() == 0
        assert "STOPPING=1" in listener.receive_until("STOPPING=1", 5)
    finally:
        server.__exit__(None, None, None)
        listener.close()
