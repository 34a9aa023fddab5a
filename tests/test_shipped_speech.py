"""The recordings the project ships (hwtests/speech): listed with source and licence, small, and
what the README's quick start streams really transcribes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from clients.corpus import wer

SPEECH = Path(__file__).resolve().parents[1] / "hwtests" / "speech"


def manifest() -> list[dict[str, str]]:
    with (SPEECH / "manifest.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_every_shipped_recording_is_listed_with_its_source_and_licence_and_the_set_stays_small():
    rows = manifest()
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in SPEECH.glob("*.wav"))
    assert all(r["license"].strip() and r["source_repo"].strip() and r["reference_text"].strip() for r in rows)
    assert sum(p.stat().st_size for p in SPEECH.glob("*.wav")) <= 2 * 1024 * 1024


def test_the_quick_start_recording_streams_to_its_reference(appliance_server):
    row = next(r for r in manifest() if r["file"] == "sent_en_jfk_ask_not.wav")
    run = subprocess.run([sys.executable, "-m", "clients.realtime.file", str(SPEECH / row["file"]), "--server",
                          appliance_server.address, "--no-realtime", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    finals = [json.loads(line) for line in run.stdout.splitlines() if json.loads(line).get("is_final")]
    assert wer(row["reference_text"], " ".join(f["text"] for f in finals)) <= 0.15
