"""The opt-in transcript sink (log/PII policy): final transcripts as JSON lines in a dedicated file.

Transcript text never reaches the main log: the sink's logger (`stt.transcripts`) is a private
instance, outside the logging hierarchy, with `propagate = False`, so root handlers never see it.
The file is created 0o600, rotated at UTC midnight and kept `transcript_retention_days`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

LOGGER_NAME = "stt.transcripts"
FILE_MODE = 0o600
_SECONDS_PER_DAY = 86_400.0
_ROTATED_SUFFIX = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\w+)?$")  # TimedRotatingFileHandler's midnight suffix

log = logging.getLogger(__name__)


class _PrivateTimedRotatingFileHandler(TimedRotatingFileHandler):
    """Opens (and re-opens after each rollover) its file owner-only, whatever the umask."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # an existing file may have been created with a wider mode
            return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class TranscriptSink:
    """Writes one JSON line per final transcript to a dedicated, rotated, owner-only file."""

    def __init__(self, path: str | os.PathLike[str], retention_days: float,
                 clock: Callable[[], float] = time.time) -> None:
        if not retention_days > 0:
            raise ValueError(f"retention_days must be > 0, got {retention_days!r}")
        self.path = Path(path)
        self.retention_days = float(retention_days)
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = _PrivateTimedRotatingFileHandler(
            self.path, when="midnight", backupCount=math.ceil(self.retention_days), utc=True, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # A private Logger instance (not logging.getLogger): no parent, no shared handlers between sinks,
        # and nothing a later logging.basicConfig/dictConfig can route to the main log.
        self._logger = logging.Logger(LOGGER_NAME, logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(self._handler)
        self._closed = False
        self.prune()

    @classmethod
    def from_config(cls, logging_config: Any) -> TranscriptSink | None:
        """A sink when both `log_transcripts` and `transcript_file` are set, else None."""
        path = getattr(logging_config, "transcript_file", None)
        if not getattr(logging_config, "log_transcripts", False) or not path:
            return None
        return cls(path, getattr(logging_config, "transcript_retention_days", 7.0))

    def write(self, session_id: str, utterance_index: int, text: str, start_sec: float, end_sec: float) -> None:
        """Append one final; never raises into the stream (the handler reports its own I/O errors)."""
        if self._closed:
            return
        record = {
            "ts": datetime.fromtimestamp(self._clock(), tz=UTC).isoformat(timespec="milliseconds"),
            "session_id": session_id,
            "utterance_index": utterance_index,
            "text": text,
            "start_sec": round(float(start_sec), 3),
            "end_sec": round(float(end_sec), 3),
        }
        self._logger.info("%s", json.dumps(record, ensure_ascii=False))

    def prune(self, now: float | None = None) -> int:
        """Delete rotated transcript files last written before the retention window; returns how many."""
        cutoff = (self._clock() if now is None else now) - self.retention_days * _SECONDS_PER_DAY
        prefix = self.path.name + "."
        deleted = 0
        for candidate in self.path.parent.glob(f"{glob.escape(self.path.name)}.*"):
            suffix = candidate.name[len(prefix):]
            if not _ROTATED_SUFFIX.match(suffix):
                continue
            try:
                if candidate.stat().st_mtime < cutoff:
                    candidate.unlink()
                    deleted += 1
            except FileNotFoundError:
                continue
            except OSError:
                log.warning("transcript sink: could not prune %s", candidate, exc_info=True)
        return deleted

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._logger.removeHandler(self._handler)
        self._handler.close()
