"""`serve`: start the appliance, serve until SIGTERM/SIGINT, drain, stop.

Order matters for operators: config and model files are checked before any port opens (a bad
setup exits non-zero at once); the port opens with health NOT_SERVING while the model loads and
warms up; SERVING (and the ready file) only after the warm-up decode.
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
from appliance.runtime import Lifecycle, Runtime
from appliance.transport.grpc.server import HealthReporter, create_grpc_server

log = logging.getLogger(__name__)


def configure_logging(config: AppConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if config.logging.file:
        handlers.append(logging.FileHandler(config.logging.file))
    logging.basicConfig(level=config.logging.level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel((config.logging.faster_whisper_level or "WARNING").upper())


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
    health = HealthReporter()
    runtime = Runtime(config, hardware_report=hardware_report)
    resolved = runtime.resolve_model()
    server, port = create_grpc_server(config, runtime, health)
    if port == 0:
        log.error("cannot bind gRPC to %s:%s", config.server.grpc_host, config.server.port)
        return 1
    await health.publish(Lifecycle.STARTING)
    await server.start()
    log.info("gRPC listening on %s:%d (loading model)", config.server.grpc_host, port)
    try:
        await asyncio.to_thread(runtime.load, resolved)
        runtime.mark_serving()
        await health.publish(Lifecycle.SERVING)
        log.info("serving model %s on port %d, %.2f s after start", runtime.model_id, port,
                 time.monotonic() - started)
        if ready_file:
            _write_ready_file(ready_file, {"grpc_port": port, "pid": os.getpid(), "model_id": runtime.model_id,
                                           "memory_budget_bytes": runtime.memory_budget.budget_bytes})
        await stop.wait()
        log.info("stop requested: draining")
        await health.publish(Lifecycle.DRAINING)
        drained = await runtime.drain(float(config.server.decode_timeout_sec))
        await server.stop(grace=1.0 if drained else 0)
        return 0
    finally:
        runtime.close()
        await health.publish(Lifecycle.STOPPED)
