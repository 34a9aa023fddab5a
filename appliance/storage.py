"""Audio persistence off the hot path: a bounded drop-oldest queue drained by one writer thread.

Stream handlers only call `AudioStore.put()` / `end_session()`, which never block and never raise;
the writer thread owns every file handle, appends mono 16-bit WAVs named
`<safe session id>-<UTC timestamp>.wav`, and enforces retention (file count, byte cap, age).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_SAMPLE_WIDTH_BYTES = 2
_MAX_SESSION_ID_CHARS = 64
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SECONDS_PER_DAY = 86_400.0


def safe_session_id(session_id: str) -> str:
    """Map a client-chosen id onto [A-Za-z0-9._-]{1,64} with no leading dot, so it stays a plain file name."""
    safe = _UNSAFE_CHARS.sub("_", str(session_id))[:_MAX_SESSION_ID_CHARS]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe or "session"


@dataclass
class _Chunk:
    session_id: str
    pcm16: bytes
    sample_rate_hz: int


@dataclass
class _End:
    session_id: str


@dataclass
class _OpenFile:
    path: Path
    raw: BinaryIO
    wav: wave.Wave_write
    sample_rate_hz: int


@dataclass(frozen=True)
class Retention:
    """Which finished recordings to delete: past `max_age_days`, then oldest first beyond
    `max_files` or `max_bytes` (None: no limit of that kind)."""

    max_bytes: int | None = None
    max_files: int | None = None
    max_age_days: float | None = None

    def apply(self, directory: Path, in_use: set[Path], now: float) -> int:
        """Delete what the limits say (never a file being written); returns how many were deleted."""
        if self.max_files is None and self.max_bytes is None and self.max_age_days is None:
            return 0
        files: list[tuple[float, int, Path]] = []
        for path in directory.glob("*.wav"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        files.sort()
        total_bytes = sum(size for _, size, _ in files)
        count = len(files)
        cutoff = now - self.max_age_days * _SECONDS_PER_DAY if self.max_age_days is not None else None
        deleted = 0
        for mtime, size, path in files:
            too_old = cutoff is not None and mtime < cutoff
            too_many = self.max_files is not None and count > self.max_files
            too_big = self.max_bytes is not None and total_bytes > self.max_bytes
            if not (too_old or too_many or too_big):
                if cutoff is None:
                    break  # sorted oldest first: nothing later is older
                continue
            if path.resolve() in in_use:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            else:
                deleted += 1
            count -= 1
            total_bytes -= size
        return deleted


class AudioStore:
    """Persists session PCM to WAV files from a single daemon writer thread."""

    def __init__(self, directory: str | os.PathLike[str], queue_max_chunks: int, max_bytes: int | None = None,
                 max_files: int | None = None, max_age_days: float | None = None,
                 clock: Callable[[], float] = time.time, queue_max_bytes: int = 16 * 1024 * 1024) -> None:
        if queue_max_chunks < 1:
            raise ValueError(f"queue_max_chunks must be >= 1, got {queue_max_chunks!r}")
        self.directory = Path(directory)
        self.queue_max_chunks = queue_max_chunks
        # Chunks range from 20 ms to a whole batch upload: the queue is bounded in bytes as well.
        self.queue_max_bytes = queue_max_bytes
        self.retention = Retention(max_bytes, max_files, max_age_days)
        self._clock = clock
        self._queue: deque[_Chunk | _End] = deque()
        self._queued_chunks = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._open: dict[str, _OpenFile] = {}  # writer thread only
        self.written_bytes = 0
        self.dropped_chunks = 0
        self.files_deleted = 0
        self.write_errors = 0

    # -- caller side (stream handlers): never blocks on I/O, never raises --------------------------

    def start(self) -> None:
        """Create the directory, apply retention once, and start the writer thread."""
        if self._thread is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="audio-store-writer", daemon=True)
        self._thread.start()

    def put(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        """Queue one PCM chunk; when the queue is full the oldest queued chunk is dropped."""
        try:
            chunk = _Chunk(str(session_id), bytes(pcm16), int(sample_rate_hz))
            with self._cond:
                if self._stopping:
                    self.dropped_chunks += 1
                    return
                while self._queued_chunks and (self._queued_chunks >= self.queue_max_chunks
                                               or self._queued_bytes + len(chunk.pcm16) > self.queue_max_bytes):
                    self._drop_oldest_chunk()
                self._queue.append(chunk)
                self._queued_chunks += 1
                self._queued_bytes += len(chunk.pcm16)
                self._cond.notify()
        except Exception:  # the hot path must survive anything storage does
            log.exception("audio store: put failed; chunk dropped")
            self.dropped_chunks += 1

    def end_session(self, session_id: str) -> None:
        """Queue a marker: the writer closes this session's file once its earlier chunks are written."""
        try:
            with self._cond:
                if self._stopping:
                    return
                self._queue.append(_End(str(session_id)))
                self._cond.notify()
        except Exception:
            log.exception("audio store: end_session failed")

    def pause(self) -> None:
        """Stop the writer taking items off the queue (tests use this to fill the queue deterministically)."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self, timeout_sec: float = 5) -> None:
        """Write what is queued, close every open file, and stop the writer thread."""
        with self._cond:
            self._stopping = True
            self._paused = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_sec)
            if self._thread.is_alive():
                log.warning("audio store: writer did not finish within %.1f s", timeout_sec)

    def _drop_oldest_chunk(self) -> None:
        # End markers are kept (they are cheap and close files); only audio chunks are dropped.
        markers: list[_End] = []
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Chunk):
                self._queued_chunks -= 1
                self._queued_bytes -= len(item.pcm16)
                self.dropped_chunks += 1
                break
            markers.append(item)
        self._queue.extendleft(reversed(markers))

    # -- writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        self._guarded(self._apply_retention)
        while True:
            with self._cond:
                while not self._stopping and (self._paused or not self._queue):
                    self._cond.wait()
                if not self._queue:
                    break
                item = self._queue.popleft()
                if isinstance(item, _Chunk):
                    self._queued_chunks -= 1
                    self._queued_bytes -= len(item.pcm16)
            if isinstance(item, _Chunk):
                self._guarded(self._write_chunk, item)
            else:
                self._guarded(self._close_session, item.session_id)
        for session_id in list(self._open):
            self._guarded(self._close_session, session_id)

    def _guarded(self, func: Callable[..., None], *args: object) -> None:
        try:
            func(*args)
        except Exception:  # disk full, permissions...: logged and counted, never raised into streams
            self.write_errors += 1
            log.exception("audio store: %s failed", func.__name__)

    def _write_chunk(self, chunk: _Chunk) -> None:
        current = self._open.get(chunk.session_id)
        if current is None:
            current = self._open_file(chunk.session_id, chunk.sample_rate_hz)
        if chunk.sample_rate_hz != current.sample_rate_hz:
            self.dropped_chunks += 1
            log.warning("audio store: chunk at %d Hz dropped; the session's file is %d Hz",
                        chunk.sample_rate_hz, current.sample_rate_hz)
            return
        whole_frames = len(chunk.pcm16) - len(chunk.pcm16) % _SAMPLE_WIDTH_BYTES
        try:
            current.wav.writeframes(chunk.pcm16[:whole_frames])
        except Exception:
            # The wave writer's state is unknown after a failed write: close it; a later chunk starts a new file.
            self._open.pop(chunk.session_id, None)
            self._close_quietly(current)
            raise
        self.written_bytes += whole_frames

    def _open_file(self, session_id: str, sample_rate_hz: int) -> _OpenFile:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        base = f"{safe_session_id(session_id)}-{stamp}"
        for attempt in range(1000):
            path = self.directory / (f"{base}.wav" if attempt == 0 else f"{base}-{attempt}.wav")
            try:
                raw = open(path, "xb")  # noqa: SIM115 - closed in _close_session
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free file name for {base}.wav in {self.directory}")
        try:
            wav = wave.open(raw, "wb")  # noqa: SIM115 - stays open across chunks; closed in _close_session
            wav.setnchannels(1)
            wav.setsampwidth(_SAMPLE_WIDTH_BYTES)
            wav.setframerate(sample_rate_hz)
        except Exception:
            raw.close()
            raise
        opened = _OpenFile(path, raw, wav, sample_rate_hz)
        self._open[session_id] = opened
        return opened

    def _close_session(self, session_id: str) -> None:
        opened = self._open.pop(session_id, None)
        if opened is None:
            return
        try:
            opened.wav.close()
        finally:
            opened.raw.close()
        self._apply_retention()

    @staticmethod
    def _close_quietly(opened: _OpenFile) -> None:
        for close in (opened.wav.close, opened.raw.close):
            try:
                close()
            except Exception:
                log.debug("audio store: close after a failed write also failed", exc_info=True)

    def _apply_retention(self) -> None:
        in_use = {opened.path.resolve() for opened in self._open.values()}
        self.files_deleted += self.retention.apply(self.directory, in_use, self._clock())
