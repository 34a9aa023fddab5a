"""`ApplianceServer`: one running appliance — its runtime, its listeners and their order of start and stop.

The shape is uvicorn's (config → server with start, drain, stop): the CLI, hwtests and the tests
all run this object, the tests in-process. Order matters for operators: config and model files are
checked before any port opens (a bad setup fails at once); the ports open with health NOT_SERVING /
503 while the model loads and warms up; SERVING only after the warm-up decode. From then on one
`HealthState` drives gRPC health, HTTP /health and sd_notify, published as the verdict changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from appliance.config import AppConfig
from appliance.lifecycle import Lifecycle
from appliance.models.registry import LoadedModel
from appliance.observability.sdnotify import SystemdHealthPublisher, SystemdNotifier
from appliance.runtime import Runtime
from appliance.transport.grpc.server import GrpcHealthPublisher, create_grpc_server, listen_address
from appliance.transport.grpc.tls import TlsError
from appliance.transport.http.planes import HttpPlanes, PlaneError
from appliance.transport.websocket.server import WebSocketServer
from appliance.transport.wyoming.server import WyomingServer

log = logging.getLogger(__name__)

WYOMING_CLOSE_GRACE_SEC = 2.0  # Wyoming clients send a chunk every 20-100 ms: enough to hear ERR1015
WEBSOCKET_CLOSE_GRACE_SEC = 2.0  # as Wyoming's: live clients send audio every 20-250 ms


class StartupError(RuntimeError):
    """The appliance cannot start as configured (a port is taken, a bad HTTP access setting)."""


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int  # the operator plane (/health, /metrics*, /system, admin, the page)
    openai: int | None  # the client plane (the OpenAI /v1 routes; None with openai.enabled false)
    wyoming: int | None
    websocket: int | None = None  # the live WebSocket door (None with websocket.enabled false)


class ApplianceServer:
    """`await start()` → serving; `await drain()` → every stream ended (or the drain timed out);
    `await stop()` → ports closed and the runtime released. `stop` is safe after a failed start."""

    def __init__(self, config: AppConfig, *, hardware_report: dict | None = None,
                 environ: Mapping[str, str] | None = None, model_loader: Callable[..., LoadedModel] | None = None):
        self.config = config
        # Where the STT_* settings that are no config key (HTTP tokens, allow-list) are read: the
        # process environment unless given (the tests run appliances with different ones side by side).
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.runtime = Runtime(config, hardware_report=hardware_report)
        if model_loader is not None:  # the tests' in-process appliances share one load of each model
            self.runtime.models.load_through(model_loader)
        self.ports: Ports | None = None
        self._grpc = None
        self._http: HttpPlanes | None = None
        self._wyoming: WyomingServer | None = None
        self._websocket: WebSocketServer | None = None
        self._notifier = SystemdNotifier()  # a no-op outside systemd
        self._watchdog: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        started = time.monotonic()
        config, runtime = self.config, self.runtime
        resolved = runtime.resolve_model()
        await self._open_listeners()
        assert self.ports is not None
        log.info("gRPC listening on %s:%d, HTTP on %s:%d%s (loading model)", config.server.grpc_host,
                 self.ports.grpc, config.server.http_host, self.ports.http,
                 f", Wyoming on {config.wyoming.host}:{self.ports.wyoming}" if self._wyoming else "")
        await asyncio.to_thread(runtime.load, resolved)
        runtime.mark_serving()
        log.info("serving model %s on port %d, %.2f s after start", runtime.model_id, self.ports.grpc,
                 time.monotonic() - started)
        self._watchdog = asyncio.create_task(self._notifier.run_watchdog(
            lambda: runtime.state in (Lifecycle.SERVING, Lifecycle.DRAINING)))

    async def _open_listeners(self) -> None:
        """Bind every port (health not serving yet); on any failure close what was opened."""
        config, runtime = self.config, self.runtime
        try:
            self._http = HttpPlanes(config, runtime, asyncio.get_running_loop(), environ=self.environ)
        except PlaneError as err:
            raise StartupError(str(err)) from None
        grpc_health = GrpcHealthPublisher()
        try:
            server, port = create_grpc_server(config, runtime.sessions, grpc_health, drain=runtime.drain_gate,
                                              on_refused=runtime.metrics.error)
        except RuntimeError:  # grpcio >= 1.60 raises where older ones returned port 0
            port = 0
        if port == 0:
            raise StartupError(f"cannot bind gRPC to {listen_address(config.server.grpc_host, config.server.port)} "
                               "(address in use, or not an address of this host)")
        self._grpc = server
        runtime.health.subscribe(grpc_health)
        runtime.health.subscribe(SystemdHealthPublisher(
            self._notifier, loading_status=f"loading model {config.model.name}",
            serving_status=f"serving {runtime.boot_model_id} on gRPC port {port}"))
        await asyncio.sleep(0)  # the NOT_SERVING publication lands before the port opens
        self._wyoming = await _wyoming_server(config, runtime)
        self._websocket = await _websocket_server(config, runtime)
        await server.start()
        self._http.start()
        self.ports = Ports(grpc=port, http=self._http.operator_port, openai=self._http.client_port,
                           wyoming=config.wyoming.port if self._wyoming else None,
                           websocket=self._websocket.port if self._websocket else None)

    async def drain(self) -> bool:
        """Report draining, keep taking sessions for server.drain_notice_sec (a balancer's check moves
        traffic first), then refuse new work at every door and wait for open streams; True when all ended."""
        runtime, config = self.runtime, self.config
        runtime.announce_drain()
        if config.server.drain_notice_sec > 0:
            log.info("reporting draining for %g s before refusing new sessions (server.drain_notice_sec)",
                     config.server.drain_notice_sec)
            await asyncio.sleep(config.server.drain_notice_sec)
        if self._wyoming:
            await self._wyoming.stop_accepting()
        drained = await runtime.drain(float(config.server.decode_timeout_sec))
        if self._wyoming:
            await self._wyoming.wait_idle(WYOMING_CLOSE_GRACE_SEC)
        if self._websocket:
            await self._websocket.wait_idle(WEBSOCKET_CLOSE_GRACE_SEC)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0 if drained else 0)
        return drained

    async def stop(self) -> None:
        """Close every listener and release the runtime (idempotent)."""
        if self._stopped.is_set():
            return
        try:
            if self._grpc is not None:
                await self._grpc.stop(grace=0)
            if self._wyoming:
                await self._wyoming.stop()
            if self._websocket:
                await self._websocket.stop()
            if self._watchdog is not None:
                self._watchdog.cancel()
            self.runtime.close()
            await asyncio.sleep(0)  # let the last health publication run
            self._notifier.close()
        finally:
            if self._http is not None:
                self._http.stop()
            self._stopped.set()

    async def wait(self) -> None:
        """Until `stop` has finished."""
        await self._stopped.wait()


async def _wyoming_server(config: AppConfig, runtime: Runtime) -> WyomingServer | None:
    """The Wyoming port, when wyoming.port is set."""
    if not config.wyoming.port:
        return None
    try:
        wyoming = WyomingServer(config.wyoming, runtime.sessions, drain=runtime.drain_gate,
                                on_refused=runtime.metrics.error)
        await wyoming.start()
    except (OSError, ValueError) as err:
        raise StartupError(f"cannot serve Wyoming on {config.wyoming.host}:{config.wyoming.port}: {err}") from None
    return wyoming



async def _websocket_server(config: AppConfig, runtime: Runtime) -> WebSocketServer | None:
    """The live WebSocket door, when websocket.enabled."""
    ws = config.websocket
    if not ws.enabled:
        return None
    try:
        server = WebSocketServer(config, runtime.sessions, drain=runtime.drain_gate, on_refused=runtime.metrics.error)
        await server.start()
    except (OSError, ValueError, TlsError) as err:
        raise StartupError(f"cannot serve the WebSocket door on {ws.host or config.server.http_host}:{ws.port}: "
                           f"{err}") from None
    return server
