"""`serve`: start the appliance, serve until SIGTERM/SIGINT, drain, stop.

Order matters for operators: config and model files are checked before any port opens (a bad
setup exits non-zero at once); the gRPC and HTTP ports open with health NOT_SERVING / 503 while the
model loads and warms up; SERVING (and the ready file) only after the warm-up decode. From then on
one `HealthState` (lifecycle + recent decode outcomes) drives gRPC health, HTTP /health and sd_notify,
published as the verdict changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

from appliance.config import AppConfig
from appliance.file_transcriber import FileTranscriber
from appliance.lifecycle import Lifecycle
from appliance.observability import log_guard
from appliance.observability.sdnotify import SystemdHealthPublisher, SystemdNotifier
from appliance.runtime import Runtime
from appliance.security.http_access import HttpAccess, HttpAccessSettings
from appliance.transport.grpc.server import GrpcHealthPublisher, create_grpc_server, listen_address
from appliance.transport.http.app import create_app
from appliance.transport.http.openai import openai_routes
from appliance.transport.http.server import HTTP_THREADS, MAX_SPOOLED_BODY_BYTES, HttpServer
from appliance.transport.wyoming.server import WyomingServer

log = logging.getLogger(__name__)

class StartupError(RuntimeError):
    """The appliance cannot start as configured (a port is taken, a bad HTTP access setting)."""


WYOMING_CLOSE_GRACE_SEC = 2.0  # Wyoming clients send a chunk every 20-100 ms: enough to hear ERR1015


def configure_logging(config: AppConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.logging.file:
        handlers.append(logging.FileHandler(config.logging.file))
    logging.basicConfig(level=config.logging.level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel((config.logging.faster_whisper_level or "WARNING").upper())
    log_guard.install()


def _write_ready_file(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)  # readers never see a half-written file


async def serve(config: AppConfig, *, ready_file: Path | None = None,
                stop: asyncio.Event | None = None, hardware_report: dict | None = None) -> int:
    """Run until `stop` is set or a signal arrives; return the process exit code."""
    started = time.monotonic()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests) or no signals
            pass
    runtime = Runtime(config, hardware_report=hardware_report)
    resolved = runtime.resolve_model()
    http = _http_server(config, runtime, loop)
    grpc_health = GrpcHealthPublisher()
    try:
        server, port = create_grpc_server(config, runtime.sessions, grpc_health)
    except RuntimeError:  # grpcio >= 1.60 raises where older ones returned port 0
        port = 0
    if port == 0:
        http.stop()
        raise StartupError(f"cannot bind gRPC to {listen_address(config.server.grpc_host, config.server.port)} "
                           "(address in use, or not an address of this host)")
    notifier = SystemdNotifier()  # a no-op outside systemd
    runtime.health.subscribe(grpc_health)
    runtime.health.subscribe(SystemdHealthPublisher(
        notifier, loading_status=f"loading model {config.model.name}",
        serving_status=f"serving {runtime.boot_model_id} on gRPC port {port}"))
    await asyncio.sleep(0)  # the NOT_SERVING publication lands before the port opens
    try:
        wyoming = await _wyoming_server(config, runtime)
    except StartupError:
        http.stop()
        raise
    await server.start()
    http.start()
    log.info("gRPC listening on %s:%d, HTTP on %s:%d%s (loading model)", config.server.grpc_host, port,
             http.host, http.port, f", Wyoming on {config.wyoming.host}:{config.wyoming.port}" if wyoming else "")
    watchdog = None
    try:
        await asyncio.to_thread(runtime.load, resolved)
        runtime.mark_serving()
        log.info("serving model %s on port %d, %.2f s after start", runtime.model_id, port,
                 time.monotonic() - started)
        watchdog = asyncio.create_task(notifier.run_watchdog(
            lambda: runtime.state in (Lifecycle.SERVING, Lifecycle.DRAINING)))
        if ready_file:
            _write_ready_file(ready_file, {"grpc_port": port, "http_port": http.port,
                                           "wyoming_port": config.wyoming.port if wyoming else None, "pid": os.getpid(),
                                           "model_id": runtime.model_id,
                                           "memory_budget_bytes": runtime.memory_budget.budget_bytes})
        await stop.wait()
        log.info("stop requested: draining")
        runtime.announce_drain()
        if config.server.drain_notice_sec > 0:
            log.info("reporting draining for %g s before refusing new sessions (server.drain_notice_sec)",
                     config.server.drain_notice_sec)
            await asyncio.sleep(config.server.drain_notice_sec)
        if wyoming:
            await wyoming.stop_accepting()
        drained = await runtime.drain(float(config.server.decode_timeout_sec))
        if wyoming:
            await wyoming.wait_idle(WYOMING_CLOSE_GRACE_SEC)
        await server.stop(grace=1.0 if drained else 0)
        return 0
    finally:
        if wyoming:
            await wyoming.stop()
        if watchdog is not None:
            watchdog.cancel()
        runtime.close()
        await asyncio.sleep(0)  # let the last health publication run
        notifier.close()
        http.stop()


async def _wyoming_server(config: AppConfig, runtime: Runtime) -> WyomingServer | None:
    """The Wyoming port, when wyoming.port is set."""
    if not config.wyoming.port:
        return None
    try:
        wyoming = WyomingServer(config.wyoming, runtime.sessions)
        await wyoming.start()
    except (OSError, ValueError) as err:
        raise StartupError(f"cannot serve Wyoming on {config.wyoming.host}:{config.wyoming.port}: {err}") from None
    return wyoming


def _http_server(config: AppConfig, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> HttpServer:
    """Bind the HTTP plane (before the model loads, so /health answers 503 "starting")."""
    try:
        access = HttpAccess(HttpAccessSettings.from_config(config.server))
    except ValueError as err:
        raise StartupError(f"HTTP access settings: {err}") from None
    threads, max_body_bytes, add_routes = HTTP_THREADS, MAX_SPOOLED_BODY_BYTES, None
    openai = config.openai
    if openai.enabled:
        transcriber = FileTranscriber(runtime.sessions, loop, max_concurrent=openai.max_concurrent_requests,
                                      timeout_sec=openai.request_timeout_sec,
                                      max_audio_sec=config.server.max_audio_seconds_per_session)
        add_routes = openai_routes(transcriber, runtime.admin, max_body_bytes=openai.max_upload_bytes,
                                   signed_tokens=config.auth.create_session_auth_profile == "signed_token")
        # Uploads get threads of their own: /health and the page keep HTTP_THREADS however many run.
        threads += openai.max_concurrent_requests
        max_body_bytes = max(max_body_bytes, openai.max_upload_bytes + 1)  # waitress refuses >= its limit
    try:
        return HttpServer(create_app(runtime.status, runtime.admin, access, add_routes), config.server.http_host,
                          config.server.metrics_port, threads=threads, max_body_bytes=max_body_bytes)
    except OSError as err:
        raise StartupError(f"cannot bind HTTP to {config.server.http_host}:{config.server.metrics_port}: "
                           f"{err.strerror or err}") from None
