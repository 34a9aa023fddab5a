"""Each in-process appliance's own log (tests/inprocess.py), kept apart from the others' and the tests'.

A record belongs to the appliance whose thread or task logged it (`owned_by`, a context variable
that the appliance's event loop thread sets and its tasks and `asyncio.to_thread` calls inherit).
Worker threads (the HTTP server's, the decode and VAD pools) carry no context: their records go to
every in-process appliance running at that moment, when they come from a server-side logger. While
appliances run, the root logger's level is lowered to the lowest `logging.level` among them, as
`stt-appliance serve` sets it, and each appliance keeps only records at or above its own levels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from appliance.config import AppConfig

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as appliance.app.configure_logging writes
FASTER_WHISPER = "faster_whisper"
# Loggers an appliance's worker threads log through; the tests' and clients' own loggers are not among them.
SERVER_SIDE = ("appliance", "grpc", "waitress", FASTER_WHISPER, "ctranslate2", "onnxruntime", "asyncio",
               "zeroconf", "py.warnings")


class ServerLog:
    """One appliance's formatted log lines and the levels it keeps."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.level = logging.INFO
        self.faster_whisper_level = logging.WARNING

    def configure(self, config: AppConfig) -> None:
        self.level = logging.getLevelName(config.logging.level.upper())
        self.faster_whisper_level = logging.getLevelName((config.logging.faster_whisper_level or "WARNING").upper())
        _levels.update()

    def keeps(self, record: logging.LogRecord) -> bool:
        faster_whisper = record.name == FASTER_WHISPER or record.name.startswith(FASTER_WHISPER + ".")
        return record.levelno >= (self.faster_whisper_level if faster_whisper else self.level)

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(line + "\n" for line in self._lines)


owned_by: ContextVar[ServerLog | None] = ContextVar("owned_by", default=None)


class _Levels:
    """The running appliances' logs, and the logger levels they need (restored once none runs)."""

    def __init__(self) -> None:
        self.running: list[ServerLog] = []
        self._lock = threading.Lock()
        self._saved: tuple[int, int] | None = None

    def join(self, log: ServerLog) -> None:
        with self._lock:
            if not self.running:
                self._saved = (logging.getLogger().level, logging.getLogger(FASTER_WHISPER).level)
                logging.getLogger().addHandler(_HANDLER)
            self.running.append(log)
        self.update()

    def leave(self, log: ServerLog) -> None:
        with self._lock:
            self.running.remove(log)
            if not self.running and self._saved is not None:
                logging.getLogger().removeHandler(_HANDLER)
                logging.getLogger().setLevel(self._saved[0])
                logging.getLogger(FASTER_WHISPER).setLevel(self._saved[1])
                self._saved = None
        self.update()

    def update(self) -> None:
        with self._lock:
            if not self.running or self._saved is None:
                return
            logging.getLogger().setLevel(min(self._saved[0], *(log.level for log in self.running)))
            logging.getLogger(FASTER_WHISPER).setLevel(min(log.faster_whisper_level for log in self.running))


class _Dispatch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        owner = owned_by.get()
        if owner is not None:
            targets = [owner]
        elif record.name.split(".")[0] in SERVER_SIDE:
            targets = list(_levels.running)
        else:
            return
        line = None
        for log in targets:
            if log.keeps(record):
                line = line or self.format(record)
                log.add(line)


_HANDLER = _Dispatch()
_HANDLER.setFormatter(logging.Formatter(FORMAT))
_levels = _Levels()


@contextmanager
def capture_logs(log: ServerLog) -> Iterator[ServerLog]:
    """Keep `log`'s records while the block runs (the appliance's whole life)."""
    _levels.join(log)
    try:
        yield log
    finally:
        _levels.leave(log)
