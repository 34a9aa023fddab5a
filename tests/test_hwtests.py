"""hwtests as an operator runs it: `python -m hwtests --tiny` as a real process, starting a real
appliance with the real model, and the report it writes (keys, verdict, plots in the HTML)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hwtests.noise import noise_clips
from hwtests.report import STABLE_KEYS, lookup
from hwtests.verdict import CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("hwtests")
    done = subprocess.run([sys.executable, "-m", "hwtests", "--tiny", "--quiet", "--out", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=420)
    return done, out


def test_tiny_run_writes_every_stable_key(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for key in STABLE_KEYS:
        lookup(report, key)  # KeyError names a missing key
    assert report["model"] == "tiny.en"
    assert report["cold_start_s"] > 0
    assert 0 < report["latency"]["final_p50_s"] <= report["latency"]["final_p95_s"]
    assert report["accuracy"]["noise_words"] == 0
    # tiny.en on clean read speech: both well under 0.3; streaming may cost a little.
    assert report["accuracy"]["offline_wer"] < 0.3
    assert report["accuracy"]["stream_wer"] < 0.3
    finals = report["capacity"]["finals_only"]
    assert [s["channels"] for s in finals["steps"]][:1] == [1]
    assert finals["max_streams"] in (None, 1, 2)
    assert all(s["server"]["rss_peak_mb"] > 0 for s in finals["steps"])
    # Each progress line names its step.
    assert "[hwtests 7/7] sweep: with partials" in done.stderr


def test_verdict_names_only_declared_classes(tiny_run):
    _, out = tiny_run
    report = json.loads((out / "report.json").read_text())
    names = {c.name for c in CLASSES}
    assert report["verdict"] == "none" or set(report["verdict"].split(", ")) <= names
    assert {c["name"] for c in report["classes"]} == names
    # Two streams at most: the room class (16) cannot be met by a tiny run.
    assert "room" not in report["verdict"]
    assert "max_sessions:" in report["recommended_config"]


def test_html_is_self_contained_with_plots(tiny_run):
    _, out = tiny_run
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 2  # latency vs streams; CPU and RSS vs streams
    # Namespace URIs (SVG, matplotlib's RDF metadata) are names, not fetches: nothing may be loaded.
    fetches = re.findall(r"""(?:src|href)\s*=\s*["']\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", page)
    assert not fetches, fetches
    assert "<script" not in page
    markdown = (out / "report.md").read_text()
    assert "Verdict:" in markdown and "Capacity sweep" in markdown


def test_noise_clips_are_quiet_and_distinct():
    clips = noise_clips(duration_sec=1.0)
    assert set(clips) == {"silence", "white", "pink", "hum_50hz"}
    assert all(len(pcm) == 2 * 16_000 for pcm in clips.values())
    assert not any(clips["silence"])
    assert len({pcm for pcm in clips.values()}) == 4
