"""Keeps what clients send out of the log volume.

`ThrottledLog` bounds how many lines a repeated refusal writes. And grpcio logs an exception with
the raw bytes (`Invalid encoding on b'...'`, up to 16 KiB, traceback included) for every metadata
value that is not UTF-8, before any appliance code runs: a client sending such headers in a loop
would fill the disk. `UndecodableMetadataFilter` drops those records and instead logs a count, at
most once a minute, without the bytes.
"""

from __future__ import annotations

import logging
import threading
import time

GRPC_CYTHON_LOGGER = "grpc._cython.cygrpc"
REPORT_EVERY_SEC = 60.0

log = logging.getLogger(__name__)


class UndecodableMetadataFilter(logging.Filter):
    def __init__(self, clock=time.monotonic):
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self._suppressed = 0
        self._reported_at = -REPORT_EVERY_SEC

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Invalid encoding on"):
            return True
        with self._lock:
            self._suppressed += 1
            now = self._clock()
            if now - self._reported_at < REPORT_EVERY_SEC:
                return False
            count, self._suppressed, self._reported_at = self._suppressed, 0, now
        log.warning("%d gRPC metadata value(s) that were not UTF-8 arrived (read as latin-1; contents "
                    "not logged)", count)
        return False


def install() -> UndecodableMetadataFilter:
    """Attach the filter to grpcio's logger once (idempotent); returns it."""
    logger = logging.getLogger(GRPC_CYTHON_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, UndecodableMetadataFilter):
            return existing
    guard = UndecodableMetadataFilter()
    logger.addFilter(guard)
    return guard


class ThrottledLog:
    """At most `per_minute` lines a minute per key (an error code, say); the rest are counted and
    the count is logged with the next line let through. A client that is refused in a loop costs the
    log a few lines a minute, not one per refusal."""

    def __init__(self, logger: logging.Logger, per_minute: int = 20, clock=time.monotonic):
        self._logger = logger
        self._per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (window start, lines, suppressed)

    def info(self, key: str, message: str, *args) -> None:
        now = self._clock()
        with self._lock:
            started, lines, suppressed = self._windows.get(key, (now, 0, 0))
            if now - started >= 60.0:
                started, lines = now, 0
            if lines >= self._per_minute:
                self._windows[key] = (started, lines, suppressed + 1)
                return
            self._windows[key] = (started, lines + 1, 0)
            if len(self._windows) > 1000:  # keys are error codes; never let them grow without bound
                self._windows.clear()
        if suppressed:
            message += f" ({suppressed} more like it not logged)"
        self._logger.info(message, *args)
