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
    done = subprocess.run([sys.executable, "-m", "hwtests", "--tiny", "--quiet", "--out", str(out)],
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
    """Real tries: the knee's step (or the top, when every step held) ran again and agreed or was
    settled best of three; report.json, report.md, report.html and stdout all carry the spread."""
    done, out = tiny_run
    report = json.loads((out / "report.json").read_text())
    for name, sweep in report["capacity"].items():
        knee = sweep["knee"]
        assert knee["streams"] == sweep["max_streams"]
        tries = {int(c): t for c, t in knee["tries"].items()}
        retried = [c for c, t in tries.items() if len(t) > 1]
        assert retried and knee["retries"] == sum(len(t) - 1 for t in tries.values()) == len(sweep["retries"])
        assert all(r["channels"] in retried and r["try"] >= 2 for r in sweep["retries"])
        for step in sweep["steps"]:
            assert step["tries"] == tries[step["channels"]]
            assert len(step["p95_tries_sec"]) == len(step["tries"])
            assert step["held"] == (sum(step["tries"]) * 2 > len(step["tries"]))
        spread = knee["spread"]
        assert spread["low"] in (None, 1, 2) and spread["high"] in (None, 1, 2) and spread["steps"] in (0, 1, 2)
        label = name.replace("_", " ")
        assert f"{label}: knee " in done.stdout and "spread" in done.stdout
    markdown = (out / "report.md").read_text()
    assert markdown.count("Knee: ") == 2 and "tries)" in markdown
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
