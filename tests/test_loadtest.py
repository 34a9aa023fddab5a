"""Tests of the load tester (clients/loadtest) and the capacity sweep's verdict (bench/sweep.py).

* pure: the figures maths (percentiles, lost-final accounting, realtime factors) on synthetic
  records, the collector's bookkeeping on scripted results, /proc sampling of this process;
* `test_loadtest_cli_*`: `python -m clients.loadtest` as a real process starting a real appliance.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import subprocess
import sys
import time

import pytest

from clients.loadtest import Clip
from clients.loadtest.__main__ import main as loadtest_main
from clients.loadtest.procstats import MB, ProcSampler, Sample, read_sample, summarise
from clients.loadtest.report import ProgressLine, compute_figures, final_records, format_report, lost_records
from clients.loadtest.runner import ChannelLog, LoadConfig, LoadResult, Snapshot, Utterance, _Collector, _Stream
from clients.sdk import SttError, TimedResult
from tests.helpers import REPO_ROOT
from tests.speech import FRONT_CENTER_WAV


def config(**overrides) -> LoadConfig:
    return LoadConfig(**{"channels": 2, "duration_sec": 10.0, "clips": (Clip("a.wav", bytes(32000)),),
                         **overrides})


def final(channel: int, index: int, latency: float, *, stream: int = 0, text_len: int = 5,
          partials: int = 0, decode_sec: float = 0.1) -> Utterance:
    return Utterance(channel, stream, index, "a.wav", final=True, latency_sec=latency,
                     received_at_sec=float(index), text_len=text_len, partials=partials, decode_sec=decode_sec)


def timed(index: int, *, is_final: bool, start: float = 1.0, end: float = 2.0, text: str = "hello",
          latency: float = 0.5, dropped: int = 0) -> TimedResult:
    return TimedResult(session_id="s", utterance_index=index, is_final=is_final, text=text, committed_text="",
                       unstable_text="", start_sec=start, end_sec=end, language="en", decode_latency_sec=0.2,
                       model_id="m", latency_sec=latency, partials_dropped=dropped)


# --- figures maths ----------------------------------------------------------------------

def test_figures_percentiles_losses_and_factors():
    latencies = [0.1 * (i + 1) for i in range(10)]  # 0.1 .. 1.0 s
    utterances = [final(i % 2, i, latency) for i, latency in enumerate(latencies)]
    utterances[3].text_len = 0  # an empty final
    utterances += [
        Utterance(0, 0, 10, "a.wav", partials=2),  # partials, never a final: lost
        Utterance(1, 1, -1, "a.wav", error="ERR1009"),  # inferred from a stream error: lost
        Utterance(1, 0, 11, "a.wav", partials=1, final=True, latency_sec=None, text_len=3),  # final, NaN latency
    ]
    result = LoadResult(config(), wall_sec=12.0, utterances=utterances,
                        channels=[ChannelLog(0, 1, audio_sec=10.0, wall_sec=11.0),
                                  ChannelLog(1, 2, audio_sec=10.0, wall_sec=10.0)],
                        errors=[], server=None)
    f = compute_figures(result)
    assert f["utterances_sent"] == 13
    assert f["finals"] == 11
    assert f["finals_lost"] == 2
    assert f["finals_empty"] == 1
    # numpy's linear interpolation over the 10 latencies that have a value
    assert f["final_latency_p50_sec"] == pytest.approx(0.55)
    assert f["final_latency_p95_sec"] == pytest.approx(0.955)
    assert f["final_latency_p99_sec"] == pytest.approx(0.991)
    assert f["final_latency_max_sec"] == pytest.approx(1.0)
    assert f["stream_rtf_mean"] == pytest.approx(1.05)
    assert f["stream_rtf_max"] == pytest.approx(1.1)
    assert f["decode_rtf"] == pytest.approx(1.0 / 20.0)  # 10 finals x 0.1 s decode / 20 s audio
    assert f["streams"] == 3
    assert f["first_partial_p50_sec"] is None
    assert [r["utterance_index"] for r in lost_records(result)] == [10, -1]
    assert len(final_records(result)) == 11
    text = format_report(f)
    assert "finals received 11 of 13 utterances sent (lost 2, empty text 1)" in text
    assert "server: CPU n/a" in text


def test_figures_with_nothing_received():
    f = compute_figures(LoadResult(config(), 1.0, [], [ChannelLog(0)], [], None))
    assert f["finals"] == 0 and f["final_latency_p50_sec"] is None and f["decode_rtf"] is None
    assert "p50 n/a" in format_report(f)


# --- the collector's bookkeeping ----------------------------------------------------------

def test_collector_first_partial_final_and_dropped_partials():
    collector = _Collector(started=100.0)
    stream = _Stream(channel=0, seq=0)
    stream.files = [(0.0, "a.wav"), (3.0, "b.wav")]
    for k in range(1, 51):  # 100 ms chunks sent at 100.1, 100.2, ...
        stream.sent.record(0.1 * k, 100.0 + 0.1 * k)
    collector.on_result(stream, timed(0, is_final=False, start=3.2, end=3.9), received=104.0)
    collector.on_result(stream, timed(0, is_final=False, start=3.2, end=4.4, dropped=2), received=104.5)
    collector.on_result(stream, timed(0, is_final=True, start=3.2, end=4.6, dropped=3, latency=0.7),
                        received=105.2)
    (u,) = collector.utterances()
    assert u.file == "b.wav"
    assert u.partials == 2 and u.final and not u.lost
    assert u.first_partial_sec == pytest.approx(104.0 - 103.2)  # the chunk holding start_sec went at 103.2
    assert u.first_partial_at_sec == pytest.approx(4.0)
    assert u.partial_gaps_sec == [pytest.approx(0.5)]
    assert u.latency_sec == pytest.approx(0.7) and u.received_at_sec == pytest.approx(5.2)
    assert u.partials_dropped == 3
    assert u.decode_sec == pytest.approx(0.6)


def test_collector_stream_errors_count_the_open_utterance_once():
    collector = _Collector(started=0.0)
    with_partials = _Stream(channel=0, seq=0)
    with_partials.audio_sec = 5.0
    collector.on_result(with_partials, timed(0, is_final=True), received=1.0)
    collector.on_result(with_partials, timed(1, is_final=False), received=2.0)
    collector.on_error(0, with_partials, SttError("decode timed out", code="ERR1009"))
    no_partials = _Stream(channel=1, seq=0)
    no_partials.audio_sec = 4.0
    collector.on_error(1, no_partials, SttError("buffer budget", code="ERR1014"))
    refused = _Stream(channel=1, seq=1)
    refused.audio_sec = 0.1
    collector.on_error(1, refused, SttError("bad token", code="ERR1005"))
    collector.on_error(1, None, SttError("full", code="ERR1007"))
    collector.on_error(1, None, SttError("Channel closed!", status=None))
    utterances = {(u.channel, u.stream, u.index): u for u in collector.utterances()}
    assert set(utterances) == {(0, 0, 0), (0, 0, 1), (1, 0, -1)}
    assert utterances[(0, 0, 1)].lost and utterances[(0, 0, 1)].error == "ERR1009"
    assert utterances[(1, 0, -1)].lost and utterances[(1, 0, -1)].error == "ERR1014"
    assert not utterances[(0, 0, 0)].lost
    result = LoadResult(config(), 5.0, collector.utterances(), [ChannelLog(0), ChannelLog(1)],
                        collector.errors, None)
    f = compute_figures(result)
    assert f["finals_lost"] == 2 and f["utterances_sent"] == 3
    assert f["errors"] == {"ERR1005": 1, "ERR1007": 1, "ERR1009": 1, "ERR1014": 1, "UNKNOWN": 1}
    assert f["sessions_refused"] == 2


# --- /proc sampling ---------------------------------------------------------------------

def test_read_sample_of_this_process_and_of_a_missing_one():
    sample = read_sample(__import__("os").getpid())
    assert sample is not None and sample.rss_bytes > 10 * MB and sample.cpu_sec > 0
    assert sample.hwm_bytes >= sample.rss_bytes
    assert read_sample(2 ** 22 + 12345) is None  # above pid_max's default: never a live pid


def test_sampler_sees_this_process_burn_cpu():
    sampler = ProcSampler(__import__("os").getpid(), interval_sec=0.05).start()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        sum(i * i for i in range(10_000))
    stats = sampler.stop()
    assert stats.samples >= 3
    assert stats.cpu_mean_pct is not None and 40 < stats.cpu_mean_pct < 100 * (stats.cpus_available or 64) + 5
    assert stats.cores_used == pytest.approx(stats.cpu_mean_pct / 100)
    assert stats.rss_peak_mb >= stats.rss_mean_mb > 0
    assert stats.host_cpu_busy_pct is not None and 0 < stats.host_cpu_busy_pct <= 100.5


def test_summarise_maths():
    samples = [Sample(0.0, 10.0, 100 * MB, 120 * MB), Sample(1.0, 10.5, 200 * MB, 200 * MB),
               Sample(2.0, 12.0, 150 * MB, 200 * MB)]
    stats = summarise(1, samples)
    assert stats.cpu_mean_pct == pytest.approx(100.0)  # 2 CPU seconds in 2 s
    assert stats.cpu_peak_pct == pytest.approx(150.0)
    assert stats.rss_peak_mb == pytest.approx(200.0) and stats.rss_mean_mb == pytest.approx(150.0)
    assert summarise(1, samples[:1]).cpu_mean_pct is None
    assert stats.host_cpu_busy_pct is None  # no /proc/stat figures in these samples
    host = [Sample(0.0, 0.0, MB, MB, host_busy_sec=10.0, host_total_sec=100.0),
            Sample(1.0, 0.0, MB, MB, host_busy_sec=11.5, host_total_sec=102.0)]
    assert summarise(1, host).host_cpu_busy_pct == pytest.approx(75.0)  # 1.5 of 2 CPU seconds busy


# --- the sweep's verdict ----------------------------------------------------------------

def _sweep_module():
    spec = importlib.util.spec_from_file_location("bench_sweep", REPO_ROOT / "bench" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_verdict_and_counts():
    sweep = _sweep_module()
    held = {"final_latency_p95_sec": 1.5, "finals_lost": 0, "errors": {}}
    assert sweep.verdict(held, 2.0) is None
    assert "p95" in sweep.verdict({**held, "final_latency_p95_sec": 2.5}, 2.0)
    assert "lost" in sweep.verdict({**held, "finals_lost": 1}, 2.0)
    assert "ERR1009" in sweep.verdict({**held, "errors": {"ERR1009": 2}}, 2.0)
    assert sweep.verdict({**held, "final_latency_p95_sec": None}, 2.0) == "no final received"
    assert sweep.parse_counts("1,2,4") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError, match="counts must be increasing"):
        sweep.parse_counts("4,2")


# --- the CLI as a real process ----------------------------------------------------------

def test_loadtest_cli_usage_errors_exit_2(capsys):
    assert loadtest_main(["--channels", "0", "--audio", str(REPO_ROOT)]) == 2
    assert loadtest_main(["--audio", "/no/such/file.wav"]) == 2
    assert "no such audio file" in capsys.readouterr().err


def test_loadtest_cli_against_a_real_server(tmp_path):
    if not FRONT_CENTER_WAV.is_file():
        pytest.skip(f"{FRONT_CENTER_WAV} missing (Debian package alsa-utils)")
    want_plot = importlib.util.find_spec("matplotlib") is not None
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    # A generous decode-queue wait: this checks the tool, not the capacity of a CI box that may be
    # running other tests beside it (ERR1009 would be counted, and the run would still exit 0).
    command = [sys.executable, "-m", "clients.loadtest", "--channels", "2", "--duration", "6", "--no-realtime",
               "--audio", str(FRONT_CENTER_WAV), "--json", str(out_json), "--quiet",
               "--server-env", "STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC=30"]
    if want_plot:
        command += ["--plot", str(out_png)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "final latency: p50" in done.stdout
    data = json.loads(out_json.read_text())
    figures = data["figures"]
    assert figures["finals"] > 0 and figures["final_latency_p50_sec"] > 0
    assert figures["errors"] == {} and figures["finals_lost"] == 0
    assert figures["server"]["rss_peak_mb"] > 0 and figures["server"]["samples"] >= 2
    assert all(r["latency_sec"] > 0 and r["file"] == FRONT_CENTER_WAV.name for r in data["finals"])
    assert len(data["finals"]) == figures["finals"]
    if want_plot:
        assert out_png.stat().st_size > 1000


def test_progress_line_rewrites_on_a_terminal_and_logs_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    snap = Snapshot(elapsed_sec=3.0, channels=4, channels_active=3, finals=2, latencies_sec=[0.5, 0.7], errors=1,
                    server=None)
    terminal, log = Terminal(), io.StringIO()
    on_terminal, in_log = ProgressLine(terminal), ProgressLine(log, log_every=2)
    for _ in range(3):
        on_terminal(snap)
        in_log(snap)
    on_terminal.close()
    in_log.close()
    assert terminal.getvalue().count("\r") == 3 and terminal.getvalue().endswith("\n")
    assert "channels 3/4 active, finals 2, p50 0.600 s, errors 1" in terminal.getvalue()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()
