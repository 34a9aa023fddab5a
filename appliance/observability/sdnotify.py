"""systemd's notify protocol: READY=1 once serving, WATCHDOG=1 pings while alive, STOPPING=1 on drain.

The protocol is one datagram per message to the unix socket named by `$NOTIFY_SOCKET` (a leading `@`
means the abstract namespace). Without that variable every call is a no-op, so the same `serve` runs
under systemd, in a container and in a terminal. Sending never raises: a vanished manager must not take
the appliance down with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from appliance.lifecycle import Lifecycle
from appliance.observability.health import HealthReport

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """`$NOTIFY_SOCKET` as an address for `socket.sendto`: `@name` is abstract (a leading NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval_sec(env: Mapping[str, str], pid: int) -> float | None:
    """Half of `$WATCHDOG_USEC` (systemd's advice), or None when no watchdog is asked of this process."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2 / 1_000_000


class SystemdNotifier:
    """Sends state changes to the service manager; every method is a no-op outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None):
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        target = env.get("NOTIFY_SOCKET", "")
        self._address = socket_address(target) if target else None
        self.watchdog_interval_sec = watchdog_interval_sec(env, pid) if self._address else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=VALUE` lines as one message; False (logged) when it could not be delivered."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(assignments).encode(), self._address)
            return True
        except OSError as err:
            log.warning("sd_notify to %r failed: %s", self._address, err)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    async def run_watchdog(self, alive: Callable[[], bool]) -> None:
        """Ping every half watchdog period while `alive()` holds. Running as a task on the event loop
        is the point: a blocked loop stops the pings and systemd restarts the service."""
        if self.watchdog_interval_sec is None:
            return
        while True:
            if alive():
                self.watchdog()
            await asyncio.sleep(self.watchdog_interval_sec)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class SystemdHealthPublisher:
    """A `HealthState` subscriber: READY=1 when serving starts, STATUS= on each verdict change,
    STOPPING=1 when draining starts. `serving_status` is the line shown while serving and healthy."""

    def __init__(self, notifier: SystemdNotifier, *, loading_status: str, serving_status: str):
        self._notifier = notifier
        self._loading_status = loading_status
        self._serving_status = serving_status
        self._ready_sent = False

    def __call__(self, state: Lifecycle, report: HealthReport) -> None:
        if state is Lifecycle.STARTING:
            self._notifier.status(self._loading_status)
        elif state is Lifecycle.SERVING:
            line = self._serving_status if report.healthy else f"degraded: {'; '.join(report.reasons)}"
            if not self._ready_sent:
                self._ready_sent = True
                self._notifier.ready(line)
            else:
                self._notifier.status(line)
        elif state is Lifecycle.DRAINING:
            self._notifier.stopping("draining: new sessions refused, finishing open utterances")
        else:
            self._notifier.status("stopped")
