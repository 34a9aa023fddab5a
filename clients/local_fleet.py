"""Several real appliances behind a real HAProxy on loopback: for tests, benchmarks and demos.

`LocalBalancer` renders the shipped `deploy/haproxy/haproxy.cfg` for loopback (its bind addresses,
the stats socket, and one `server` line per node in place of the DNS `server-template`: every other
line, the balancing, HTTP/2, health checks and timeouts included, is the shipped one), runs
`haproxy -db` on it and reads its runtime API. `LocalFleet` boots N appliances (sharing a ticket
secret, named node1..nodeN as the balancer names them) and the balancer in front of them.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from clients.local_server import REPO_ROOT, LocalAppliance

SHIPPED_CFG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
BACKEND = "appliances"


class HAProxyMissing(RuntimeError):
    pass


def haproxy_binary() -> str:
    binary = shutil.which("haproxy")
    if binary is None:
        raise HAProxyMissing("haproxy is not installed (apt-get install haproxy; scripts/test.sh does)")
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def render_config(shipped: str, nodes: Mapping[str, tuple[str, int]], grpc_port: int, stats_port: int,
                  admin_socket: Path) -> str:
    """The shipped config for loopback: `nodes` maps a server name to (gRPC address, HTTP port)."""
    templates = re.findall(r"^\s*server-template \S+ \S+ \S+ (.*)$", shipped, flags=re.M)
    if len(templates) != 1:
        raise ValueError("the shipped haproxy.cfg has no single server-template line to replace")
    # The template's options, less DNS discovery, with each node's own health-check port.
    options = re.sub(r"\b(resolvers|init-addr|port) \S+", "", templates[0]).split()
    servers = "".join(f"    server {name} {address} {' '.join(options)} port {http_port}\n"
                      for name, (address, http_port) in nodes.items())
    rendered = re.sub(r"^\s*server-template .*\n", servers, shipped, flags=re.M)
    rendered = re.sub(r"(stats socket )\S+", rf"\g<1>{admin_socket}", rendered)
    rendered = re.sub(r"bind :50051 ", f"bind 127.0.0.1:{grpc_port} ", rendered)
    return re.sub(r"bind :8404\b", f"bind 127.0.0.1:{stats_port}", rendered)


class LocalBalancer:
    """`haproxy -db` on the rendered config; `address` is its gRPC front door."""

    def __init__(self, nodes: Mapping[str, tuple[str, int]]):
        self._binary = haproxy_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="stt-haproxy-")
        work = Path(self._dir.name)
        self.admin_socket = work / "admin.sock"
        self.config_path = work / "haproxy.cfg"
        self.log_path = work / "haproxy.log"
        self.grpc_port, self.stats_port = _free_port(), _free_port()
        self.config_path.write_text(render_config(SHIPPED_CFG.read_text(), nodes, self.grpc_port,
                                                  self.stats_port, self.admin_socket))
        self.names = list(nodes)
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_sec: float = 20.0) -> LocalBalancer:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([self._binary, "-db", "-f", str(self.config_path)],
                                        stdout=self._log, stderr=subprocess.STDOUT)
        for name in self.names:
            self.wait_for_state(name, "UP", timeout_sec)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, text: str, timeout_sec: float = 5.0) -> str:
        """One runtime-API command over the admin socket; its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_sec)
            conn.connect(str(self.admin_socket))
            conn.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def _stats(self) -> dict[str, dict[str, str]]:
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row.get("pxname") == BACKEND
                and row["svname"] not in ("FRONTEND", "BACKEND")}

    def server_states(self) -> dict[str, str]:
        """node name -> UP, DOWN, MAINT, ... (the first word of HAProxy's status)."""
        return {name: row["status"].split()[0] for name, row in self._stats().items()}

    def requests_per_server(self) -> dict[str, int]:
        """node name -> calls (HTTP/2 streams: CreateSession and StreamingRecognize) sent to it."""
        return {name: int(row["stot"] or 0) for name, row in self._stats().items()}

    def wait_for_state(self, name: str, state: str, timeout_sec: float) -> float:
        """Wait until HAProxy reports `name` in `state`; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_sec:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.server_states().get(name) == state:
                    return time.monotonic() - started
            except OSError:
                pass  # the admin socket is not there yet
            time.sleep(0.1)
        raise TimeoutError(f"{name} not {state} within {timeout_sec:g} s: {self.server_states()}\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if hasattr(self, "_log"):
            self._log.close()
        self._dir.cleanup()


class LocalFleet:
    """`count` appliances sharing `secret`, with HAProxy in front; `address` is the balancer's.
    Per-IP session caps are off, as in compose.fleet.yaml: behind the balancer every client has its
    address. `env` adds STT_* settings for every node. Use `with`, or start() and stop()."""

    def __init__(self, count: int, secret: str, env: Mapping[str, str] | None = None):
        self.nodes = {f"node{i + 1}": LocalAppliance(env={
            "STT_AUTH_SESSION_TICKET_SECRET": secret, "STT_SERVER_NODE_NAME": f"node{i + 1}",
            "STT_SERVER_MAX_SESSIONS_PER_IP": "0", **(env or {})}) for i in range(count)}
        self.balancer: LocalBalancer | None = None

    @property
    def address(self) -> str:
        assert self.balancer is not None, "the fleet has not been started"
        return self.balancer.address

    def start(self) -> LocalFleet:
        haproxy_binary()
        failures: list[BaseException] = []

        def boot(node: LocalAppliance) -> None:
            try:
                node.start()
            except BaseException as err:  # re-raised below, on the caller's thread
                failures.append(err)
        threads = [threading.Thread(target=boot, args=(node,)) for node in self.nodes.values()]
        for thread in threads:  # booted side by side: each loads its model for a few seconds
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        if failures:
            self.stop()
            raise failures[0]
        self.balancer = LocalBalancer({name: (node.address, int(node.http_port or 0))
                                       for name, node in self.nodes.items()})
        self.balancer.start()
        return self

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for node in self.nodes.values():
            node.__exit__(None, None, None)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
