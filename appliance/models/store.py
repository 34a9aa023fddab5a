"""Model store: resolve a model name to a verified local directory, never touching the network.

Resolution order (DESIGN.md section 7): an existing local directory (or a file inside one); a model
pack installed from the package index (`appliance.models.packs`, each file pinned by sha256); a
model an operator fetched earlier with `stt-appliance models fetch` (its manifest is read here, the
download lives in `appliance.models.fetch`); otherwise an error that says how to get one.

Imports go one way: fetch and convert build on this module and on `appliance.models.files`; this
module imports neither of them. The names of files and packs are re-exported (`__all__`), so
callers keep importing them from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from appliance.models.ct2_file import check_ct2_file
from appliance.models.files import (
    COPY_BLOCK,
    REQUIRED_CT2_FILES,
    ModelStoreError,
    build_once,
    cache_dir,
    check_ct2_layout,
    exclusive_lock,
    remember_verified,
    sha256_of,
    verify_file,
    write_atomically,
)
from appliance.models.packs import (
    PACKS,
    UNUSABLE,
    AssembledFile,
    ModelPack,
    PackFile,
    PackNotInstalled,
    PackSource,
    assembled_dir,
    pack_path,
)

__all__ = [
    "COPY_BLOCK", "MANIFEST", "PACKS", "REQUIRED_CT2_FILES", "UNUSABLE", "AssembledFile", "ModelPack",
    "ModelStoreError", "PackFile", "PackNotInstalled", "PackSource", "ResolvedModel", "assembled_dir",
    "build_once", "cache_dir", "exclusive_lock", "fetched_dir", "remember_verified", "resolve_fetched",
    "resolve_model", "sha256_of", "verify_file", "write_atomically",
]

MANIFEST = "manifest.json"  # in a fetched model's directory: the hub repo and each file's sha256


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    source: str  # "pack:<distribution(s)>", "local" or "fetched:<repo>"
    english_only: bool


def resolve_model(name: str, model_dir: str | None = None) -> ResolvedModel:
    """Find the model's directory and verify it; raise ModelStoreError with the fix otherwise."""
    if model_dir:
        return _resolve_local(Path(model_dir), name)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return _resolve_local(candidate, name)
    if candidate.is_file() and candidate.name == "model.bin":  # a path to the weights: use their folder
        return _resolve_local(candidate.parent, name)
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
    check_ct2_layout(path)
    check_ct2_file(path / "model.bin")  # no pin to check against: at least a complete, readable file
    english_only = name.endswith(".en") or path.name.endswith(".en")
    return ResolvedModel(name=name, path=path, source="local", english_only=english_only)


def _resolve_pack(pack: ModelPack) -> ResolvedModel:
    return ResolvedModel(name=pack.name, path=pack_path(pack),
                         source=f"pack:{'+'.join(s.distribution for s in pack.sources)}",
                         english_only=pack.english_only)


# --- models fetched earlier (appliance.models.fetch writes them) -----------------------------

def fetched_dir(name: str) -> Path:
    return cache_dir() / "fetched" / name.replace("/", "--")


def resolve_fetched(name: str) -> ResolvedModel | None:
    """The model fetched earlier under `name`, verified against its manifest; None if never fetched."""
    directory = fetched_dir(name)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files, repo = dict(manifest["files"]), str(manifest["repo"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelStoreError(f"fetched model manifest {manifest_path} is unreadable ({err}); "
                              f"fetch {name!r} again") from err
    for file_name, sha256 in files.items():
        verify_file(directory / file_name, sha256)
    return ResolvedModel(name=name, path=directory, source=f"fetched:{repo}",
                         english_only=name.endswith(".en"))
