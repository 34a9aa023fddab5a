"""An appliance in this process, for tests that only talk to one: `InProcessAppliance`.

It runs `appliance.server.ApplianceServer` on an event loop of its own in a background thread, with
the config `stt-appliance serve ARGS` would build (the same flag parser, loader and hardware decision,
appliance.cli) and STT_* settings given as a dict, never written to os.environ, so appliances with
different settings run side by side. It answers on free loopback ports and has the surface of
`clients.local_server.LocalAppliance` that tests use (address, port, http_port, http_url, log(),
stop(), a context manager), plus `ports`, `runtime` and `drain()`. Booting one costs no interpreter
start, no imports and, after the first, no model load (SHARED_MODELS). Tests of the process itself
(the CLI, signals, exit codes, systemd, Docker, cold start, a crash) keep using LocalAppliance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Mapping

from appliance.cli import decide_hardware, parse_serve_args
from appliance.config import ConfigError, load_config_from_args
from appliance.config_sources import default_config_paths
from appliance.models.shared import SharedModels
from appliance.observability import log_guard
from appliance.runtime import Runtime
from appliance.server import ApplianceServer, Ports
from clients.local_server import LOOPBACK_DEFAULTS, REPO_ROOT, loopback_env
from tests.server_logs import ServerLog, capture_logs, owned_by

# Each model is loaded and warmed up once per test session (about a second each time otherwise); the
# appliances that load it share its backend, each with its own registry record and leases.
SHARED_MODELS = SharedModels()


class InProcessAppliance:
    def __init__(self, *extra_args: str, env: Mapping[str, str] | None = None, startup_timeout_sec: float = 90.0):
        server_yaml, model_yaml = default_config_paths(REPO_ROOT)  # as LocalAppliance's cwd gives them
        self.argv = ["--config", str(server_yaml), "--model-config", str(model_yaml), *LOOPBACK_DEFAULTS,
                     *extra_args]
        # Where its STT_* settings are read, config keys or not (HTTP tokens); os.environ is never written.
        self.env = loopback_env({**os.environ, **(env or {})})
        self._startup_timeout_sec = startup_timeout_sec
        self.log_record = ServerLog()
        self.server: ApplianceServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop_requested: asyncio.Event | None = None
        self._drain_task: asyncio.Future[bool] | None = None

    # --- the surface tests use ------------------------------------------------------------------

    @property
    def ports(self) -> Ports:
        if self.server is None or self.server.ports is None:
            raise RuntimeError("the appliance is not serving")
        return self.server.ports

    @property
    def runtime(self) -> Runtime:
        if self.server is None:
            raise RuntimeError("the appliance has not been started")
        return self.server.runtime

    @property
    def port(self) -> int:
        return self.ports.grpc

    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def openai_port(self) -> int | None:
        """The OpenAI API's own listener (None with openai.enabled false)."""
        return self.ports.openai

    @property
    def openai_url(self) -> str:
        """The OpenAI API's base URL (…/v1)."""
        return f"http://127.0.0.1:{self.openai_port}/v1"

    @property
    def websocket_port(self) -> int | None:
        """The live WebSocket door's listener (None with websocket.enabled false)."""
        return self.ports.websocket

    @property
    def websocket_url(self) -> str:
        """The WebSocket door's base URL (plain ws:// on loopback unless a certificate is configured)."""
        return f"ws://127.0.0.1:{self.websocket_port}"

    def log(self) -> str:
        """This appliance's log records, formatted as `stt-appliance serve` writes them."""
        return self.log_record.text()

    # --- start and stop ---------------------------------------------------------------------------

    def start(self) -> InProcessAppliance:
        self._thread = threading.Thread(target=self._run, name=f"appliance-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout_sec):
            self._request_stop()
            raise TimeoutError(f"appliance not ready within {self._startup_timeout_sec:g} s:\n{self.log()}")
        if self._failure is not None:
            self._thread.join(30)
            raise RuntimeError(f"appliance failed before serving: {type(self._failure).__name__}: "
                               f"{self._failure}\n{self.log()}") from self._failure
        return self

    def drain(self, timeout_sec: float = 60.0) -> bool:
        """What SIGTERM starts: report draining, refuse new work, wait for open streams (True: all ended).
        The ports stay open until `stop`."""
        if self._loop is None or self.server is None:
            raise RuntimeError("the appliance is not serving")
        future = asyncio.run_coroutine_threadsafe(self._drain_once(), self._loop)
        try:
            return future.result(timeout_sec)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"drain did not finish within {timeout_sec:g} s") from None

    def stop(self, timeout_sec: float = 60.0) -> None:
        """Drain (as SIGTERM would), close every port and release the runtime; idempotent."""
        if self._thread is None:
            return
        self._request_stop()
        self._thread.join(timeout_sec)
        if self._thread.is_alive():
            raise TimeoutError(f"appliance did not stop within {timeout_sec:g} s:\n{self.log()[-4000:]}")
        if self.server is not None and self._failure is not None:  # it served, then its drain or stop failed
            failure, self._failure = self._failure, None
            raise RuntimeError(f"appliance failed while stopping: {failure!r}") from failure

    def __enter__(self) -> InProcessAppliance:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # --- the appliance's own thread ------------------------------------------------------------

    def _request_stop(self) -> None:
        loop, stop = self._loop, self._stop_requested
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile: it has stopped already
                pass

    def _run(self) -> None:
        owned_by.set(self.log_record)  # records logged on this thread and its tasks are this appliance's
        with capture_logs(self.log_record):
            try:
                asyncio.run(self._serve())
            except BaseException as err:  # reported by start() or stop()
                self._failure = self._failure or err
            finally:
                self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            config = load_config_from_args(parse_serve_args(self.argv), env=self.env)
        except ConfigError as err:
            self._failure = err
            return
        self.log_record.configure(config)
        log_guard.install()
        config, hardware_report = decide_hardware(config)
        server = ApplianceServer(config, hardware_report=hardware_report, environ=self.env,
                                 model_loader=SHARED_MODELS)
        try:
            await server.start()
        except BaseException as err:
            self._failure = err
            await server.stop()
            return
        self.server = server
        self._ready.set()
        try:
            await self._stop_requested.wait()
            await self._drain_once()
        finally:
            await server.stop()

    async def _drain_once(self) -> bool:
        """One drain however many ask (a test's `drain()`, then `stop()`)."""
        assert self.server is not None
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self.server.drain())
        return await asyncio.shield(self._drain_task)
