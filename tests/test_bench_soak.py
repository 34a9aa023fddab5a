"""bench/soak.py: its bookkeeping on synthetic input, and one short soak as a real process.

The smoke run starts its own appliance with a 3 s session timeout so that every session kind
(stall past the timeout, never-streamed expiry) fits in ~20 s of load, and checks the script
exits 0 and prints the leak table read from /metrics.json.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from clients.loadtest import default_audio
from tests.helpers import REPO_ROOT

SOAK = REPO_ROOT / "bench" / "soak.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_lost_finals_slope_and_unexposed_figures():
    soak = _soak_module()
    # Finals 0 and 2 arrived, 1 never did; 3 got partials only.
    assert soak.count_lost("normal", {0, 2}, {3}, unexpected=False) == 2
    assert soak.count_lost("cancel", {0, 2}, {3}, unexpected=False) == 1  # what was open at the cut may go
    assert soak.count_lost("disconnect", set(), set(), unexpected=True) == 1
    assert soak.count_lost("normal", {0, 1}, set(), unexpected=False) == 0
    # 2 MB per minute after a flat warm-up = 120 MB/hour.
    samples = [(0.0, 500.0)] + [(60.0 * i, 100.0 + 2.0 * i) for i in range(1, 11)]
    assert soak.rss_slope_mb_per_hour(samples, 30.0) == pytest.approx(120.0)
    assert soak.rss_slope_mb_per_hour(samples[:1], 0.0) is None
    rows = {name: value for name, value, _ in soak.leak_figures({"sessions": {"active": 2}}, lost=0)}
    assert rows["active sessions"] == 2 and rows["VAD slots leased"] is None
    assert rows["admission: tickets per client IP"] is None and rows["finals lost (client side)"] == 0


def test_soak_smoke_run_exits_0_and_prints_the_leak_table(tmp_path):
    if not default_audio():
        pytest.skip("no audio: neither ../shared/audio nor /usr/share/sounds/alsa")
    out = tmp_path / "soak.json"
    command = [sys.executable, str(SOAK), "--minutes", "0.3", "--streams", "3", "--report-sec", "10",
               "--sample-sec", "2", "--max-file-sec", "4", "--settle-sec", "5", "--seed", "7",
               "--mix", "normal=3,cancel=1,disconnect=1,stall=1,stall_timeout=1,never_streamed=1",
               "--server-env", "STT_SERVER_SESSION_TIMEOUT_SEC=3",
               # A generous decode-queue wait: this checks the tool, not a busy CI box's capacity.
               "--server-env", "STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC=30", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session timeout 3 s" in done.stdout
    assert "leaks after the 5 s settle" in done.stdout
    for figure in ("active sessions", "VAD slots leased", "buffered audio bytes", "admission: client IPs",
                   "decodes queued", "pending decodes of live streams", "finals lost (client side)"):
        assert figure in done.stdout
    assert "n/a (not exposed)" in done.stdout  # tickets per client IP: /metrics.json has only the IP count
    assert "verdict: no leak, no lost final" in done.stdout
    data = json.loads(out.read_text())
    assert data["finals_lost"] == 0 and data["unexpected_errors"] == 0
    assert sum(k["finals"] for k in data["kinds"]) > 0
    assert all(row["value"] in (0, None) for row in data["leaks"])
    assert len(data["rss"]["samples"]) >= 2
