"""Keeps what clients send out of the log volume.

grpcio logs an exception with the raw bytes (`Invalid encoding on b'...'`, up to 16 KiB, traceback
included) for every metadata value that is not UTF-8, before any appliance code runs: a client
sending such headers in a loop would fill the disk. The filter drops those records and instead
logs a count, at most once a minute, without the bytes.
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
