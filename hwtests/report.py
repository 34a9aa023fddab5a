"""report.json (the stable keys of DESIGN.md section 11, nested: `capacity.finals_only.max_streams`
is report["capacity"]["finals_only"]["max_streams"]) and report.md, the same figures for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwtests.sweep import describe_knee

# The keys other tools may read; tests check each is present (values may be None when a step failed).
STABLE_KEYS = ("profile", "model", "cold_start_s", "capacity.finals_only.max_streams",
               "capacity.partials.max_streams", "latency.final_p50_s", "latency.final_p95_s",
               "accuracy.stream_wer", "accuracy.offline_wer", "accuracy.noise_words", "verdict")


def lookup(report: dict[str, Any], dotted: str) -> Any:
    """report["a"]["b"] for "a.b"; KeyError naming the key when a level is missing."""
    value: Any = report
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def _p95_cell(step: dict[str, Any]) -> str:
    """The first try's p95, and the range over every try when the step was retried."""
    tries = [p for p in step.get("p95_tries_sec") or [] if p is not None]
    first = _fmt(step["final_latency_p95_sec"])
    return f"{first} ({min(tries):.3f}-{max(tries):.3f})" if len(tries) > 1 else first


def _held_cell(step: dict[str, Any]) -> str:
    tries = step.get("tries") or []
    verdict = "held" if step["held"] else "did not hold"
    return f"{verdict} ({sum(tries)} of {len(tries)} tries)" if len(tries) > 1 else verdict


def sweep_rows(sweep: dict[str, Any]) -> list[list[str]]:
    """One row per stream count: the first try's figures; p95 and the outcome over every try."""
    rows = []
    for s in sweep["steps"]:
        server = s.get("server") or {}
        rows.append([str(s["channels"]), _fmt(s["final_latency_p50_sec"]), _p95_cell(s),
                     str(s["finals"]), str(s["finals_lost"]), str(sum(s["errors"].values())),
                     _fmt(server.get("cpu_mean_pct")), _fmt(server.get("rss_peak_mb")),
                     _fmt(s.get("gpu_util_mean_pct")), _fmt(s.get("gpu_mem_peak_mib")), _held_cell(s)])
    return rows


def knee_text(sweep: dict[str, Any]) -> str:
    """The knee, whether its retries confirmed it, and the spread they saw ("" for a sweep that
    never ran or a report from before retries)."""
    return describe_knee(sweep["knee"]) if sweep.get("knee") else ""


def capacity_cell(sweep: dict[str, Any]) -> str:
    spread = (sweep.get("knee") or {}).get("spread")
    if not spread or spread["low"] == spread["high"]:
        return _fmt(sweep["max_streams"])
    return f"{_fmt(sweep['max_streams'])} (single passes read {_fmt(spread['low'])}-{_fmt(spread['high'])})"


SWEEP_COLUMNS = ["streams", "p50 s", "p95 s (range over tries)", "finals", "lost", "errors", "server CPU %",
                 "RSS peak MB", "GPU %", "VRAM MiB", "step"]


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _baseline_note(baseline: dict[str, Any] | None) -> str:
    if not baseline:
        return ""
    return f" ({baseline['model']}, {baseline['device']}, {baseline['compute_type']})"


def _audio_input_section(audio: dict[str, Any] | None) -> list[str]:
    """The --mic step; nothing when it was not asked for."""
    if audio is None:
        return []
    if "device" not in audio:
        return ["", "## Audio input", "", f"Assessment: {audio['assessment']} (see Steps)."]
    rates = ", ".join(str(r) for r in audio["supported_rates_hz"]) or "none of the usual rates"
    inputs = [[str(d["index"]), d["name"], str(d["channels"]), _fmt(d["default_rate_hz"])] for d in audio["devices"]]
    return ["", "## Audio input", "",
            f"**{audio['device']}**: {audio['assessment']}. Recorded {audio['record_sec']:g} s at "
            f"{audio['rate_hz']} Hz: RMS {audio['rms_dbfs']:.1f} dBFS, peak {audio['peak_dbfs']:.1f} dBFS, "
            f"{audio['clipped_fraction']:.2%} of samples clipped. Opens at: {rates} Hz.", "",
            _table(["index", "input device", "channels", "default Hz"], inputs)]


def markdown(report: dict[str, Any]) -> str:
    acc, lat, cap = report["accuracy"], report["latency"], report["capacity"]
    parts = [f"# hwtests report: {report['host']} ({report['mode']})", "",
             f"**Verdict: {report['verdict']}** (profile `{report['profile']}`, model `{report['model']}`)", ""]
    parts += [f"- {c['description']}: {'met' if c['met'] else 'not met'} "
              f"(held {_fmt(c['streams_held'])} streams)" for c in report["classes"]]
    parts += [f"- warning: {w}" for w in report["warnings"]]
    parts += ["", "## Figures", "",
              _table(["figure", "value"], [
                  ["cold start to SERVING", _fmt(report["cold_start_s"], " s")],
                  ["one stream: final latency p50", _fmt(lat["final_p50_s"], " s")],
                  ["one stream: final latency p95", _fmt(lat["final_p95_s"], " s")],
                  ["capacity, finals only (streams)", capacity_cell(cap["finals_only"])],
                  ["capacity, with partials (streams)", capacity_cell(cap["partials"])],
                  ["streamed WER", _fmt(acc["stream_wer"])],
                  ["offline WER" + _baseline_note(acc.get("offline_baseline")), _fmt(acc["offline_wer"])],
                  ["words from noise alone (must be 0)", _fmt(acc["noise_words"])]])]
    parts += _audio_input_section(report.get("audio_input"))
    for name in ("finals_only", "partials"):
        sweep = cap[name]
        parts += ["", f"## Capacity sweep: {name.replace('_', ' ')}", "",
                  f"Knee: {knee_text(sweep) or _fmt(sweep['max_streams'])}. "
                  f"Stopped by: {sweep['stopped_by'] or 'nothing (every step held)'}; "
                  f"p95 limit {sweep['p95_limit_sec']:g} s.", "", _table(SWEEP_COLUMNS, sweep_rows(sweep))]
    parts += ["", "## Recommended config", "", "```yaml", report["recommended_config"].rstrip(), "```",
              "", "## Steps", "",
              _table(["step", "wall s", "error"], [[name, _fmt(t["wall_sec"]), t["error"] or ""]
                                                  for name, t in report["steps"].items()]),
              "", "Figures differ per box, per load on the box and per run; see docs/hwtests.md.", ""]
    return "\n".join(parts)


def write_markdown(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(markdown(report), encoding="utf-8")
    return path
