"""Start a real appliance process on a free loopback port: for tests, benchmarks and demos.

`LocalAppliance` runs `python -m appliance serve --port 0 --ready-file ...` and waits for the
ready file, which the server writes only after its warm-up decode, so `address` is usable at once.
Tests that only talk to an appliance run one in-process instead (tests/inprocess.py), with the
same defaults: every port free and on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Free ports on loopback, so several appliances can run at once; arguments given after these win.
LOOPBACK_DEFAULTS = ("--port", "0", "--grpc-host", "127.0.0.1", "--metrics-port", "0", "--http-host", "127.0.0.1")
# The OpenAI API's and the WebSocket door's own listeners (no flags): free too, unless set.
LOOPBACK_ENV = {"STT_OPENAI_PORT": "0", "STT_WEBSOCKET_PORT": "0"}


def loopback_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with LOOPBACK_ENV's settings where it does not set them itself."""
    return {**LOOPBACK_ENV, **env}


class LocalAppliance:
    def __init__(self, *extra_args: str, env: dict[str, str] | None = None, startup_timeout_sec: float = 90.0,
                 log_path: Path | None = None):
        self._workdir = tempfile.TemporaryDirectory(prefix="stt-appliance-")
        self.ready_file = Path(self._workdir.name) / "ready.json"
        self.log_path = log_path or Path(self._workdir.name) / "server.log"
        self.command = [sys.executable, "-m", "appliance", "serve", *LOOPBACK_DEFAULTS,
                        "--ready-file", str(self.ready_file), *extra_args]
        self._env = loopback_env({**os.environ, **(env or {})})
        self._startup_timeout_sec = startup_timeout_sec
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        self.openai_port: int | None = None  # the OpenAI API's own listener, when the ready file names one

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the appliance has not been started")
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI API's base URL (…/v1)."""
        return f"http://127.0.0.1:{self.openai_port}/v1"

    def start(self) -> LocalAppliance:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=self._env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self._startup_timeout_sec
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                ready = json.loads(self.ready_file.read_text())
                self.port = int(ready["grpc_port"])
                self.http_port = int(ready["http_port"])
                self.openai_port = int(ready["openai_port"]) if ready.get("openai_port") else None
                return self
            if self.process.poll() is not None:
                output = self.log()
                self.__exit__(None, None, None)  # close the log, remove the work dir
                raise RuntimeError(f"appliance exited with {self.process.returncode} before serving:\n{output}")
            time.sleep(0.05)
        output = self.log()
        self.__exit__(None, None, None)
        raise TimeoutError(f"appliance not ready within {self._startup_timeout_sec:g} s:\n{output}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_sec: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_sec)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> LocalAppliance:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._workdir.cleanup()
