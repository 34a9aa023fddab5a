"""Plain helpers shared by several test modules (fixtures live in conftest.py).

Paths of the repository and its shipped configuration, transcript normalising, YAML files written
into tmp_path for the config tests, copies of the bundled model pack for the model-store tests, and
the check that a resumed stream's finals match an uncut run's (resume and fleet tests).
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

from appliance.config import AppConfig, load_config
from appliance.models.store import PACKS
from clients.corpus import wer
from clients.sdk import TimedResult

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_YAML = REPO_ROOT / "config" / "server.yaml"
MODEL_YAML = REPO_ROOT / "config" / "model.yaml"


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: for asserting on transcripts."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# --- config files in tmp_path --------------------------------------------------------------------

def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_server(tmp_path: Path, text: str, **kwargs) -> AppConfig:
    return load_config(server_path=write(tmp_path, "server.yaml", text), env=kwargs.pop("env", {}), **kwargs)


# --- the bundled tiny.en pack ---------------------------------------------------------------------

PACK = PACKS["tiny.en"]
PACK_SHA256 = {f.name: f.sha256 for f in PACK.files}["model.bin"]
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


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


def assert_same_finals(finals: list[TimedResult], uncut: list[TimedResult]) -> None:
    """A stream that resumed lost and repeated nothing: every utterance index of the uncut run once,
    in order, at the same timeline positions (±0.4 s), with the same words (WER <= 0.1: the resumed
    utterance is decoded again from resent audio)."""
    assert [f.utterance_index for f in finals] == [f.utterance_index for f in uncut], "a final lost or repeated"
    for resumed, reference in zip(finals, uncut, strict=True):
        assert abs(resumed.start_sec - reference.start_sec) <= 0.4, (resumed, reference)
        assert abs(resumed.end_sec - reference.end_sec) <= 0.4, (resumed, reference)
    starts = [f.start_sec for f in finals]
    assert starts == sorted(starts) and all(f.end_sec > f.start_sec for f in finals)
    assert wer(" ".join(f.text for f in uncut), " ".join(f.text for f in finals)) <= 0.1
