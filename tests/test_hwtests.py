"""hwtests as an operator runs it: `python -m hwtests --tiny` as a real process, starting a real
appliance with the real model, and the report it writes (keys, verdict, the knee's retries, plots in
the HTML). matplotlib is blocked in that process, as in the images, which do not carry it: the whole
report must be written, exit 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hwtests.knee import majority_held
from hwtests.noise import noise_clips
from hwtests.report import STABLE_KEYS, lookup
from hwtests.verdict import CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("hwtests")
    # A `matplotlib` that cannot be imported shadows the installed one: the images lack it.
    blocker = tmp_path_factory.mktemp("no-matplotlib")
    (blocker / "matplotlib").mkdir()
    (blocker / "matplotlib" / "__init__.py").write_text('raise ImportError("matplotlib is not installed here")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO_ROOT)])}
    # One session at most: the 2-stream steps are refused for certain, so the knee's retries run for
    # real (the failed step and the one before it, best of three) on every run.
    done = subprocess.run([sys.executable, "-m", "hwtests", "--tiny", "--quiet", "--out", str(out),
                           "--server-arg=--max-sessions=1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420)
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
    assert not any(t["error"] for t in report["steps"].values()), report["steps"]


def test_the_knee_is_retried_and_its_spread_reported(tiny_run):
    """Real tries: 2 streams gave way (the second session refused), so that step ran again and gave
    way again, and the step before it (1 stream) ran again to confirm the knee; report.json,
    report.md, report.html and stdout all carry the tries and the spread."""
    done, out = tiny_run
    report = json.loads((out / "report.json").read_text())
    for name, sweep in report["capacity"].items():
        knee = sweep["knee"]
        assert knee["tries"]["2"] == [False, False], knee
        assert len(knee["tries"]["1"]) >= 2 and knee["confirmed"]
        held_at_1 = majority_held(knee["tries"]["1"])
        assert knee["streams"] == sweep["max_streams"] == (1 if held_at_1 else None)
        if held_at_1:
            assert sweep["stopped_by"].startswith("errors ERR"), sweep["stopped_by"]
        assert [r["channels"] for r in sweep["retries"]][:2] == [2, 1]
        assert knee["retries"] == len(sweep["retries"]) and all(r["try"] >= 2 for r in sweep["retries"])
        for step in sweep["steps"]:
            assert step["tries"] == knee["tries"][str(step["channels"])]
            assert len(step["p95_tries_sec"]) == len(step["tries"])
            assert step["held"] == majority_held(step["tries"])
        if all(knee["tries"]["1"]):
            assert knee["spread"] == {"low": 1, "high": 1, "steps": 0}
        assert f"{name.replace('_', ' ')}: knee " in done.stdout and "spread" in done.stdout
    markdown = (out / "report.md").read_text()
    assert markdown.count("Knee: ") == 2 and "did not hold (0 of 2 tries)" in markdown
    page = (out / "report.html").read_text()
    assert page.count("<p>knee: ") == 2 and "spread" in page


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
