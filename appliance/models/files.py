"""Model files on disk: the cache directory, sha256 pins, locks and atomic writes.

The layer every other model module builds on (it imports none of them): `verify_file` checks a
file against its pinned sha256 once per (path, size, mtime) and records the result in the cache, so
restarts stay fast while a corrupt or truncated file is still caught and named before a backend
sees it; `write_atomically` writes through a temporary file in the same directory, fsynced and
checked before the rename; `exclusive_lock` and `build_once` let concurrent processes build a cached
artifact once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED_CT2_FILES = ("model.bin", "config.json")
COPY_BLOCK = 1 << 20


class ModelStoreError(RuntimeError):
    """The model cannot be used; the message names the file or name and what to do."""


def cache_dir() -> Path:
    root = os.environ.get("STT_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "stt-appliance"


def read_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(COPY_BLOCK), b"")


def remove_stale_temporaries(directory: Path) -> None:
    """Temporaries left by a process killed mid-write (only called while holding the lock)."""
    for stale in directory.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """An fcntl lock shared by every process on this machine; released when the holder exits, even by a crash."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomically(target: Path, blocks: Iterable[bytes], expected_sha256: str | None = None) -> str:
    """Write `blocks` to `target` via a temporary file in the same directory; returns the sha256.

    With `expected_sha256`, a mismatch raises ModelStoreError and leaves `target` untouched."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            for block in blocks:
                f.write(block)
                digest.update(block)
            f.flush()
            os.fsync(f.fileno())
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise ModelStoreError(f"assembled {target} has sha256 {actual}, expected {expected_sha256}; "
                                  "its parts changed while being read")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    remember_verified(target, actual)
    return actual


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def build_once(target: Path, is_done: Callable[[], bool], build: Callable[[], None]) -> None:
    """Run `build` unless `is_done()`, under `target`'s lock so concurrent processes build it once."""
    if is_done():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if not is_done():
            remove_stale_temporaries(target.parent)
            build()

# --- verification ----------------------------------------------------------------------------

def check_ct2_layout(path: Path) -> None:
    if not path.is_dir():
        raise ModelStoreError(f"model directory {path} does not exist")
    missing = [f for f in REQUIRED_CT2_FILES if not (path / f).is_file()]
    if missing:
        raise ModelStoreError(f"model directory {path} lacks {', '.join(missing)}: not a CTranslate2 Whisper model")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for block in read_blocks(path):
        digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path, sha256: str) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise ModelStoreError naming `path` unless its sha256 is `expected_sha256` (cached per size+mtime)."""
    if not path.is_file():
        raise ModelStoreError(f"model file {path} is missing")
    stamp = _stamp(path, expected_sha256)
    if _read_json(_verified_cache()).get(str(path)) == stamp:
        return
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelStoreError(
            f"model file {path} is corrupt or truncated: sha256 {actual}, expected {expected_sha256} "
            f"({stamp['size']} bytes); reinstall its pack"
        )
    remember_verified(path, expected_sha256)


def remember_verified(path: Path, sha256: str) -> None:
    """Record that `path`, as it is now, hashes to `sha256` (read-modify-write under a lock)."""
    cache_file = _verified_cache()
    try:
        with exclusive_lock(cache_file.with_name(".verified.lock")):
            cache = _read_json(cache_file)
            cache[str(path)] = _stamp(path, sha256)
            _write_json_atomic(cache_file, cache)
    except OSError as err:  # a read-only cache only costs a re-hash at the next start
        log.debug("cannot record the verification of %s: %s", path, err)


def _verified_cache() -> Path:
    return cache_dir() / "verified.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: Path, data: dict) -> None:
    """Best effort: a read-only cache only costs a re-hash at the next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verified-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as err:
        log.debug("cannot write the verification cache %s: %s", path, err)

