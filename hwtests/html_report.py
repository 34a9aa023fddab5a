"""report.html: one file that opens in a browser with no network (plots are inline SVG drawn by
hwtests.svg_plot, no plotting library, no script, no external style), for operators who will not
read JSON."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from hwtests.report import SWEEP_COLUMNS, capacity_cell, knee_text, sweep_rows
from hwtests.svg_plot import Reference, Series, line_chart
from hwtests.verdict import CLASSES

SWEEP_LABELS = {"finals_only": "finals only", "partials": "with partials"}


def _xy(sweep: dict[str, Any], pick) -> tuple[list[int], list[float]]:
    points = [(s["channels"], pick(s)) for s in sweep["steps"]]
    points = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in points], [y for _, y in points]


def _retried(sweep: dict[str, Any], pick) -> list[tuple[float, float]]:
    """Every later try of a retried step, drawn hollow beside the line of first tries."""
    points = [(r["channels"], pick(r)) for r in sweep.get("retries", [])]
    return [(x, y) for x, y in points if y is not None]


def _series(capacity: dict[str, Any], pick) -> list[Series]:
    return [Series(SWEEP_LABELS[name], *_xy(sweep, pick), extra=_retried(sweep, pick))
            for name, sweep in capacity.items()]


def plots(capacity: dict[str, Any]) -> list[tuple[str, str]]:
    """[(title, svg)]: p95 final latency vs streams (both sweeps, every try, class limits dashed),
    server CPU vs streams and server RSS vs streams."""
    streams = "concurrent realtime streams"
    return [
        ("p95 final latency vs streams (hollow: the retries at the knee)", line_chart(
            _series(capacity, lambda s: s["final_latency_p95_sec"]), x_label=streams,
            y_label="p95 final latency, s",
            references=[Reference(c.p95_limit_sec, f"{c.name} limit") for c in CLASSES])),
        ("server CPU vs streams", line_chart(
            _series(capacity, lambda s: (s.get("server") or {}).get("cpu_mean_pct")), x_label=streams,
            y_label="server CPU, % of one core")),
        ("server RSS vs streams", line_chart(
            _series(capacity, lambda s: (s.get("server") or {}).get("rss_peak_mb")), x_label=streams,
            y_label="server RSS peak, MB")),
    ]


def _table(columns: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
         "text-align:right}th{background:#f4f4f4}.met{color:#070}.unmet{color:#a00}pre{background:#f4f4f4;"
         "padding:1em}")


def render(report: dict[str, Any]) -> str:
    esc = html.escape
    acc, lat, cap = report["accuracy"], report["latency"], report["capacity"]
    classes = "".join(f"<li class=\"{'met' if c['met'] else 'unmet'}\">{esc(c['description'])}: "
                      f"{'met' if c['met'] else 'not met'} (held {c['streams_held']})</li>"
                      for c in report["classes"])
    warnings = "".join(f"<li>warning: {esc(w)}</li>" for w in report["warnings"])

    def fig(value: Any, unit: str = "") -> str:
        return "n/a" if value is None else (f"{value:.3f}{unit}" if isinstance(value, float) else f"{value}{unit}")

    figures = _table(["figure", "value"], [
        ["cold start to SERVING", fig(report["cold_start_s"], " s")],
        ["one stream: final latency p50 / p95", f"{fig(lat['final_p50_s'], ' s')} / {fig(lat['final_p95_s'], ' s')}"],
        ["capacity: finals only / with partials",
         f"{capacity_cell(cap['finals_only'])} / {capacity_cell(cap['partials'])} streams"],
        ["WER: streamed / offline", f"{fig(acc['stream_wer'])} / {fig(acc['offline_wer'])}"],
        ["words from noise alone (must be 0)", fig(acc["noise_words"])]])
    sweeps = "".join(f"<h2>Capacity sweep: {SWEEP_LABELS[name]}</h2><p>knee: "
                     f"{esc(knee_text(sweep) or fig(sweep['max_streams']))}; stopped by: "
                     f"{esc(sweep['stopped_by'] or 'nothing (every step held)')}</p>"
                     + _table(SWEEP_COLUMNS, sweep_rows(sweep)) for name, sweep in cap.items())
    graphs = "".join(f"<h2>{esc(title)}</h2><figure>{svg}</figure>" for title, svg in plots(cap))
    steps = _table(["step", "wall s", "error"], [[n, fig(t["wall_sec"]), t["error"] or ""]
                                                 for n, t in report["steps"].items()])
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>hwtests: {esc(report['host'])}</title>"
            f"<style>{STYLE}</style></head><body><h1>hwtests report: {esc(report['host'])} ({esc(report['mode'])})"
            f"</h1><p><b>Verdict: {esc(report['verdict'])}</b> (profile <code>{esc(str(report['profile']))}</code>, "
            f"model <code>{esc(str(report['model']))}</code>, {esc(report['created_at'])})</p>"
            f"<ul>{classes}{warnings}</ul>"
            f"{figures}{graphs}{sweeps}<h2>Recommended config</h2><pre>{esc(report['recommended_config'])}</pre>"
            f"<h2>Steps</h2>{steps}<p>Figures differ per box, per load on it and per run.</p></body></html>\n")


def write_html(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.html"
    path.write_text(render(report), encoding="utf-8")
    return path
