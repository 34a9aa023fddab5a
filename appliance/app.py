"""`serve`: the process around an `ApplianceServer` — logging, signals, the ready file, exit code.

SIGTERM/SIGINT start the drain (appliance.server.ApplianceServer.drain); the process exits once
every stream has ended or the drain timed out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path

from appliance.config import AppConfig
from appliance.observability import log_guard
from appliance.server import ApplianceServer, StartupError

__all__ = ["ApplianceServer", "StartupError", "configure_logging", "serve"]
log = logging.getLogger(__name__)


def configure_logging(config: AppConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.logging.file:
        handlers.append(logging.FileHandler(config.logging.file))
    logging.basicConfig(level=config.logging.level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel((config.logging.faster_whisper_level or "WARNING").upper())
    log_guard.install()


def write_ready_file(path: Path, server: ApplianceServer) -> None:
    """{grpc_port, http_port, openai_port, wyoming_port, websocket_port, pid, model_id, memory_budget_bytes},
    replaced atomically."""
    ports = server.ports
    assert ports is not None
    payload = {"grpc_port": ports.grpc, "http_port": ports.http, "openai_port": ports.openai,
               "wyoming_port": ports.wyoming, "websocket_port": ports.websocket, "pid": os.getpid(),
               "model_id": server.runtime.model_id, "memory_budget_bytes": server.runtime.memory_budget.budget_bytes}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)  # readers never see a half-written file


async def serve(config: AppConfig, *, ready_file: Path | None = None,
                stop: asyncio.Event | None = None, hardware_report: dict | None = None) -> int:
    """Run until `stop` is set or a signal arrives, then drain; return the process exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests) or no signals
            pass
    server = ApplianceServer(config, hardware_report=hardware_report)
    try:
        await server.start()
        if ready_file:
            write_ready_file(ready_file, server)
        await stop.wait()
        log.info("stop requested: draining")
        await server.drain()
        return 0
    finally:
        await server.stop()
