"""hwtests' judgement on made-up sweeps: which classes a box meets, its warnings and the config
snippet it recommends, and the report's markdown for the optional audio input step. No server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from hwtests import report, verdict
from hwtests.__main__ import parse_args
from hwtests.mic import CLIPPED_FRACTION_LIMIT, SILENT_RMS_DBFS, assess, peak_dbfs


def step(channels: int, p95: float | None, *, lost: int = 0, errors: dict[str, int] | None = None) -> dict[str, Any]:
    return {"channels": channels, "final_latency_p50_sec": None if p95 is None else p95 / 2,
            "final_latency_p95_sec": p95, "finals": 10, "finals_lost": lost, "errors": errors or {},
            "server": {"cpu_mean_pct": 50.0, "rss_peak_mb": 400.0}, "held": True}


def sweep(partials: bool, steps: list[dict[str, Any]], max_streams: int | None,
          stopped_by: str | None = "p95 2.500 s > 2 s") -> dict[str, Any]:
    return {"partials": partials, "p95_limit_sec": verdict.SWEEP_P95_LIMIT_SEC, "max_streams": max_streams,
            "stopped_by": stopped_by, "steps": steps}


def capacity(finals: dict[str, Any], partials: dict[str, Any]) -> dict[str, Any]:
    return {"finals_only": finals, "partials": partials}


A_ROOM_BOX = capacity(
    sweep(False, [step(1, 0.4), step(8, 0.9), step(16, 1.8), step(24, 2.5)], 16),
    sweep(True, [step(1, 0.5), step(4, 0.8), step(8, 1.4), step(12, 2.6)], 8))
A_SMALL_BOX = capacity(
    sweep(False, [step(1, 0.7), step(2, 1.1), step(4, 2.4)], 2),
    sweep(True, [step(1, 0.9), step(2, 1.3)], 1))


def classes_met(judged: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["met"] for c in judged["classes"]}


def test_a_box_holding_16_finals_and_8_partial_streams_is_a_room_and_a_kiosk():
    judged = verdict.judge(A_ROOM_BOX, noise_words=0)
    assert classes_met(judged) == {"kiosk": True, "room": True}
    assert judged["verdict"] == "kiosk, room"
    # The kiosk limit (1 s) is tighter than the sweep's (2 s): held 8 at 1.4 s, but only 4 within 1 s.
    kiosk = next(c for c in judged["classes"] if c["name"] == "kiosk")
    assert kiosk["streams_held"] == 4
    assert judged["warnings"] == []


def test_a_small_box_meets_no_class_and_says_none():
    judged = verdict.judge(A_SMALL_BOX, noise_words=0)
    assert judged["verdict"] == "none"
    kiosk = next(c for c in judged["classes"] if c["name"] == "kiosk")
    assert kiosk["streams_held"] == 1 and not kiosk["met"]


def test_a_lost_final_breaks_the_run_of_held_steps_even_within_latency():
    lossy = capacity(sweep(False, [step(1, 0.4), step(8, 0.6, lost=1), step(16, 0.9)], 1),
                     sweep(True, [step(1, 0.5), step(4, 0.6, errors={"ERR1009": 2})], 1))
    judged = verdict.judge(lossy, noise_words=0)
    assert [c["streams_held"] for c in judged["classes"]] == [1, 1]
    assert judged["verdict"] == "none"


def test_warnings_name_noise_words_an_unfound_knee_and_a_bad_microphone():
    unbounded = capacity(sweep(False, [step(1, 0.4), step(2, 0.5)], 2, stopped_by=None),
                         sweep(True, [step(1, 0.5)], 1))
    judged = verdict.judge(unbounded, noise_words=3,
                           audio_input={"device": "USB Mic", "assessment": "clipping: lower the input gain"})
    text = "\n".join(judged["warnings"])
    assert "3 words transcribed from noise" in text
    assert "finals_only: every step held; the knee lies beyond 2 streams" in text
    assert "audio input (USB Mic): clipping" in text
    assert "partials:" not in text  # that sweep found its knee
    assert verdict.judge(unbounded, 0, {"device": "USB Mic", "assessment": "ok"})["warnings"] == [
        w for w in judged["warnings"] if "finals_only" in w]


@pytest.mark.parametrize("box, max_sessions, cadence", [
    (A_ROOM_BOX, 16, verdict.PARTIAL_CADENCE_SLOW_SEC),  # partials cost capacity: decode them half as often
    (capacity(sweep(False, [step(1, 0.4), step(4, 0.9)], 4), sweep(True, [step(1, 0.5), step(4, 0.9)], 4)),
     4, verdict.PARTIAL_CADENCE_DEFAULT_SEC),  # partials cost nothing: keep the default
    (capacity(sweep(False, [step(1, 0.4)], 1), sweep(True, [step(1, 2.4)], None)), 1, None),  # off
    (capacity(sweep(False, [step(1, 2.4)], None), sweep(True, [step(1, 2.4)], None)), 1, None),
])
def test_recommended_config_is_yaml_sized_from_the_knees(box, max_sessions, cadence):
    snippet = verdict.recommended_config(box, {"profile": "cpu", "model": "tiny.en", "pool_size": 2})
    loaded = yaml.safe_load(snippet)
    interval, interval_max = cadence or (None, None)
    assert loaded == {"server": {"max_sessions": max_sessions, "partial_decode_interval_sec": interval,
                                 "partial_decode_interval_max_sec": interval_max},
                      "model": {"pool_size": 2}}
    assert snippet.startswith("# recommended for this box by hwtests (profile cpu, model tiny.en)")


def test_microphone_assessment_thresholds():
    assert assess(SILENT_RMS_DBFS, 0.0).startswith("silent")
    assert assess(-30.0, CLIPPED_FRACTION_LIMIT * 2).startswith("clipping")
    assert assess(-30.0, CLIPPED_FRACTION_LIMIT) == "ok"
    assert peak_dbfs(np.zeros(10, dtype=np.int16)) == -90.0
    assert peak_dbfs(np.array([0, -32768], dtype=np.int16)) == pytest.approx(0.0)
    assert peak_dbfs(np.array([16384], dtype=np.int16)) == pytest.approx(-6.02, abs=0.01)


def minimal_report(audio_input: dict[str, Any] | None) -> dict[str, Any]:
    judged = verdict.judge(A_ROOM_BOX, 0, audio_input)
    return {"host": "box", "mode": "quick", "profile": "cpu", "model": "tiny.en", "cold_start_s": 2.0,
            "latency": {"final_p50_s": 0.6, "final_p95_s": 0.7}, "capacity": A_ROOM_BOX,
            "accuracy": {"stream_wer": 0.01, "offline_wer": 0.02, "noise_words": 0,
                         "offline_baseline": {"model": "tiny.en", "device": "cpu", "compute_type": "int8"}},
            "audio_input": audio_input, **judged,
            "recommended_config": verdict.recommended_config(A_ROOM_BOX, {"pool_size": 1}),
            "steps": {"inventory": {"wall_sec": 1.0, "error": None}}}


def test_markdown_shows_the_audio_input_only_when_it_was_checked():
    assert "## Audio input" not in report.markdown(minimal_report(None))
    checked = report.markdown(minimal_report({
        "devices": [{"index": 4, "name": "pulse", "channels": 32, "default_rate_hz": 44100.0}],
        "device": "pulse", "rate_hz": 44100, "supported_rates_hz": [16000, 44100, 48000], "record_sec": 3.0,
        "rms_dbfs": -21.5, "peak_dbfs": -9.0, "clipped_fraction": 0.0, "assessment": "ok"}))
    assert "**pulse**: ok. Recorded 3 s at 44100 Hz: RMS -21.5 dBFS" in checked
    assert "Opens at: 16000, 44100, 48000 Hz." in checked
    assert "offline WER (tiny.en, cpu, int8)" in checked
    failed = report.markdown(minimal_report({"assessment": "not checked: CliError: no input device found"}))
    assert "Assessment: not checked: CliError: no input device found" in failed
    assert "warning: audio input (no device): not checked" in failed


def test_mic_device_needs_mic(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--tiny", "--out", "x", "--mic-device", "3"])
    assert stopped.value.code == 2
    assert "--mic-device needs --mic" in capsys.readouterr().err
    assert parse_args(["--tiny", "--out", "x", "--mic", "--mic-device", "pulse"]).mic_device == "pulse"


def with_knee(sweep_: dict[str, Any], tries: dict[int, list[bool]], knee: int | None,
              confirmed: bool = True) -> dict[str, Any]:
    """A sweep as run_sweep leaves it after retries: per-step tries and the knee's record."""
    from hwtests.knee import knee_spread, majority_held, steps_apart

    counts = [s["channels"] for s in sweep_["steps"]]
    low, high = knee_spread(counts, tries)
    steps = [{**s, "held": majority_held(tries[s["channels"]]), "tries": tries[s["channels"]],
              "p95_tries_sec": [s["final_latency_p95_sec"]] * len(tries[s["channels"]])} for s in sweep_["steps"]]
    return {**sweep_, "steps": steps, "retries": [], "max_streams": knee,
            "knee": {"streams": knee, "confirmed": confirmed, "retries": 3,
                     "tries": {str(c): t for c, t in tries.items()},
                     "spread": {"low": low, "high": high, "steps": steps_apart(counts, low, high)}}}


def test_the_knee_and_its_spread_are_in_the_markdown_the_html_and_the_warnings():
    from hwtests.html_report import render

    finals = with_knee(A_ROOM_BOX["finals_only"], {1: [True], 8: [False, True, True], 16: [True, True],
                                                   24: [False, False]}, 16)
    partials = with_knee(A_ROOM_BOX["partials"], {1: [True], 4: [True, True], 8: [True, False, False], 12: [False]},
                         4, confirmed=False)
    box = capacity(finals, partials)
    report_ = {**minimal_report(None), "capacity": box, **verdict.judge(box, 0), "created_at": "now"}
    text = report.markdown(report_)
    assert ("Knee: 16 streams, confirmed; tries at the knee: 8 held 2 of 3, 16 held 2 of 2, 24 held 0 of 2; "
            "spread 1-16 streams (2 steps)") in text
    assert "| 16 (single passes read 1-16) |" in text
    assert "held (2 of 3 tries)" in text and "did not hold (1 of 3 tries)" in text
    assert "NOT confirmed (retry budget spent)" in text
    assert "warning: finals_only: single passes would have read 1 to 16 streams (2 steps apart)" in text
    assert "warning: partials: the knee's retries did not agree within the retry budget" in text
    page = render(report_)
    assert page.count("<p>knee: ") == 2 and page.count("<svg") == 3 and "<script" not in page


def test_svg_charts_are_drawn_by_hand():
    from hwtests.svg_plot import Reference, Series, line_chart, nice_ticks

    assert nice_ticks(0, 2.1) == [0, 0.5, 1, 1.5, 2, 2.5]
    assert nice_ticks(0, 33) == [0, 10, 20, 30, 40]
    assert nice_ticks(0, 0.0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    chart = line_chart([Series("finals <only>", [1, 8, 16], [0.5, 0.9, 1.8], extra=[(16, 2.1)]),
                        Series("with partials", [1, 8], [0.6, 1.4])],
                       x_label="streams", y_label="p95, s", references=[Reference(2.0, "room limit")])
    assert chart.startswith("<svg xmlns=\"http://www.w3.org/2000/svg\"") and chart.endswith("</svg>")
    assert chart.count("<polyline") == 2 and chart.count('fill="none" stroke="#1f77b4"/>') == 1  # one hollow retry
    assert "finals &lt;only&gt;" in chart and "room limit" in chart and "stroke-dasharray" in chart
    assert "no figures" in line_chart([Series("x", [], [])], x_label="a", y_label="b")
