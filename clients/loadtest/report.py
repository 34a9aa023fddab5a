"""What a load run means: the figures, their printing, the JSON file and the plot.

Owns `compute_figures(result)` (one flat dict: the contract of the JSON "figures" object and of
bench/sweep.py's table), `format_report(figures)`, `ProgressLine` (the `\\r` status line),
`final_records` / `lost_records`, `write_json` and `write_plot` (matplotlib, imported lazily).
Definitions (docs/loadtest.md has the long form):

* utterances sent: distinct (stream, utterance_index) seen, plus one per stream error that no
  open utterance accounts for (unless the stream was refused on its first chunk);
* finals lost: utterances with partials but no final, plus those a stream error cut off;
* finals repeated: finals beyond the first for one utterance (a resume must never cause one);
* finals per node: by the node (gRPC header `stt-node`) whose call sent the final; resumes: how many
  times streams re-attached after a dropped connection;
* final latency: TimedResult.latency_sec (final received - the audio up to its end_sec sent);
* time to first partial: first partial received - the chunk holding the utterance's start sent
  (the start includes the server's 0.3 s pre-roll, so this is up to 0.3 s more than from the onset);
* partial interval: time between consecutive partials of an utterance received (the cadence);
* stream realtime factor: a channel's stream wall time / audio it sent (> 1: fell behind);
* decode RTF: sum of STTResult.decode_latency_sec over every result / audio seconds sent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from clients.cli_common import percentile
from clients.loadtest.runner import LoadResult, Snapshot


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def compute_figures(result: LoadResult) -> dict[str, Any]:
    cfg = result.config
    utterances = result.utterances
    finals = [u for u in utterances if u.final]
    latencies = [u.latency_sec for u in finals if u.latency_sec is not None]
    first_partials = [u.first_partial_sec for u in utterances if u.first_partial_sec is not None]
    partial_gaps = [gap for u in utterances for gap in u.partial_gaps_sec]
    audio_sec = sum(ch.audio_sec for ch in result.channels)
    decode_sec = sum(u.decode_sec for u in utterances)
    stream_rtfs = [r for ch in result.channels if (r := _ratio(ch.wall_sec, ch.audio_sec)) is not None]
    return {
        "channels": cfg.channels,
        "duration_sec": cfg.duration_sec,
        "wall_sec": result.wall_sec,
        "realtime": cfg.realtime,
        "partials_enabled": cfg.partials,
        "files": len(cfg.clips),
        "streams": sum(ch.streams for ch in result.channels),
        "sessions_refused": sum(1 for e in result.errors if e.where == "create"),
        "utterances_sent": len(utterances),
        "finals": len(finals),
        "finals_lost": sum(1 for u in utterances if u.lost),
        "finals_repeated": sum(u.finals - 1 for u in finals),
        "finals_per_node": dict(sorted(Counter(u.node for u in finals if u.node).items())),
        "resumes": sum(ch.resumes for ch in result.channels),
        "finals_empty": sum(1 for u in finals if not u.text_len),
        "final_latency_p50_sec": percentile(latencies, 0.50),
        "final_latency_p95_sec": percentile(latencies, 0.95),
        "final_latency_p99_sec": percentile(latencies, 0.99),
        "final_latency_max_sec": max(latencies, default=None),
        "first_partial_p50_sec": percentile(first_partials, 0.50),
        "first_partial_p95_sec": percentile(first_partials, 0.95),
        "partial_interval_p50_sec": percentile(partial_gaps, 0.50),
        "partial_interval_p95_sec": percentile(partial_gaps, 0.95),
        "partials": sum(u.partials for u in utterances),
        "partials_dropped": sum(u.partials_dropped for u in utterances),
        "audio_sec": audio_sec,
        "stream_rtf_mean": sum(stream_rtfs) / len(stream_rtfs) if stream_rtfs else None,
        "stream_rtf_max": max(stream_rtfs, default=None),
        "decode_sec": decode_sec,
        "decode_rtf": _ratio(decode_sec, audio_sec),
        "errors": dict(sorted(Counter(e.code for e in result.errors).items())),
        "cancelled_at_grace": result.cancelled_at_grace,
        "server": result.server.as_dict() if result.server else None,
    }


def step_failure(figures: dict[str, Any], p95_limit_sec: float) -> str | None:
    """Whether a capacity step held: None when it did, else why not (bench/sweep.py and hwtests).
    A step holds when it got finals, lost none, counted no error and kept p95 within the limit."""
    p95 = figures["final_latency_p95_sec"]
    if p95 is None:
        return "no final received"
    if figures["finals_lost"]:
        return f"{figures['finals_lost']} finals lost"
    if figures.get("finals_repeated"):
        return f"{figures['finals_repeated']} finals repeated"
    if figures["errors"]:
        return "errors " + ", ".join(f"{code} x{n}" for code, n in figures["errors"].items())
    if p95 > p95_limit_sec:
        return f"p95 {p95:.3f} s > {p95_limit_sec:g} s"
    return None


def final_records(result: LoadResult) -> list[dict[str, Any]]:
    return [{"channel": u.channel, "stream": u.stream, "file": u.file,
             "utterance_index": u.index, "node": u.node, "latency_sec": u.latency_sec,
             "received_at_sec": u.received_at_sec,
             "text_len": u.text_len, "first_partial_sec": u.first_partial_sec,
             "partials": u.partials, "partials_dropped": u.partials_dropped}
            for u in sorted(result.utterances, key=lambda u: u.received_at_sec or 0.0) if u.final]


def lost_records(result: LoadResult) -> list[dict[str, Any]]:
    return [{"channel": u.channel, "stream": u.stream, "file": u.file, "utterance_index": u.index,
             "partials": u.partials, "error": u.error} for u in result.utterances if u.lost]


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_server(server: dict[str, Any] | None) -> str:
    if not server or not server.get("samples"):
        return "server: CPU n/a, RSS n/a (pass --server-pid with --server)"
    cpus = server.get("cpus_available")
    return (f"server: CPU {_num(server['cpu_mean_pct'], '.0f')}% mean "
            f"({_num(server['cores_used'], '.2f')} of {cpus or '?'} cores, peak "
            f"{_num(server['cpu_peak_pct'], '.0f')}%), RSS peak {_num(server['rss_peak_mb'], '.1f')} MB, "
            f"mean {_num(server['rss_mean_mb'], '.1f')} MB; host CPU {_num(server.get('host_cpu_busy_pct'), '.0f')}% "
            f"busy (all processes)")


def format_report(f: dict[str, Any]) -> str:
    pacing = "realtime" if f["realtime"] else "as fast as possible"
    if f["partials_enabled"]:
        first_partial = (f"time to first partial: p50 {_sec(f['first_partial_p50_sec'])}, "
                         f"p95 {_sec(f['first_partial_p95_sec'])}; partial interval: p50 "
                         f"{_sec(f['partial_interval_p50_sec'])}, p95 {_sec(f['partial_interval_p95_sec'])}")
    else:
        first_partial = "time to first partial: n/a (partials off)"
    errors = ", ".join(f"{code} x{n}" for code, n in f["errors"].items()) or "none"
    lines = [
        f"load: {f['channels']} channels, {f['duration_sec']:g} s, {pacing}, {f['files']} files, "
        f"{f['streams']} streams, {f['wall_sec']:.1f} s wall",
        f"finals received {f['finals']} of {f['utterances_sent']} utterances sent "
        f"(lost {f['finals_lost']}, empty text {f['finals_empty']})",
        f"final latency: p50 {_sec(f['final_latency_p50_sec'])}, p95 {_sec(f['final_latency_p95_sec'])}, "
        f"p99 {_sec(f['final_latency_p99_sec'])}, max {_sec(f['final_latency_max_sec'])}",
        first_partial,
        f"partials: {f['partials']} received, {f['partials_dropped']} dropped by the server",
        f"stream realtime factor: mean {_num(f['stream_rtf_mean'])}, max {_num(f['stream_rtf_max'])}; "
        f"decode RTF {_num(f['decode_rtf'])} ({f['decode_sec']:.1f} s decode for {f['audio_sec']:.1f} s audio)",
        *(["nodes: " + ", ".join(f"{node} {n} finals" for node, n in f["finals_per_node"].items())
           + f"; {f['resumes']} resumes after a dropped connection, {f['finals_repeated']} finals repeated"]
          if f["finals_per_node"] or f["resumes"] or f["finals_repeated"] else []),
        f"errors: {errors}" + (" (streams still open after the grace period were cancelled)"
                               if f["cancelled_at_grace"] else ""),
        format_server(f["server"]),
    ]
    return "\n".join(lines)


class ProgressLine:
    """Rewrites one status line (with `\\r`) per tick on a terminal; elsewhere (CI logs, pipes) it
    writes a plain line every `log_every` ticks instead. close() ends the line."""

    def __init__(self, stream: TextIO | None = None, label: str = "", log_every: int = 10):
        self.stream = stream or sys.stderr
        self.label = label
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._log_every = max(1, log_every)
        self._ticks = 0
        self._width = 0

    def __call__(self, snap: Snapshot) -> None:
        self._ticks += 1
        if not self._tty and self._ticks % self._log_every:
            return
        server = ""
        if snap.server and snap.server.rss_peak_mb is not None:
            server = f", server RSS peak {snap.server.rss_peak_mb:.0f} MB"
        text = (f"{self.label}[{snap.elapsed_sec:5.0f} s] channels {snap.channels_active}/{snap.channels} "
                f"active, finals {snap.finals}, p50 {_sec(percentile(snap.latencies_sec, 0.5))}, "
                f"errors {snap.errors}{server}")
        if self._tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def write_json(path: str | Path, figures: dict[str, Any], result: LoadResult, **extra: Any) -> None:
    payload = {"figures": figures, **extra, "finals": final_records(result), "lost": lost_records(result),
               "errors": [asdict(e) for e in result.errors]}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plot(path: str | Path, result: LoadResult, title: str = "") -> None:
    """Two panels: final latency histogram with its CDF, and final latency against run time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = final_records(result)
    latencies = sorted(r["latency_sec"] for r in records if r["latency_sec"] is not None)
    fig, (hist, scatter) = plt.subplots(1, 2, figsize=(12, 4.5))
    if latencies:
        hist.hist(latencies, bins=min(40, max(5, len(latencies) // 3)), color="tab:blue", alpha=0.7)
        cdf = hist.twinx()
        cdf.plot(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))], color="tab:red",
                 drawstyle="steps-post")
        cdf.set_ylim(0, 1.02)
        cdf.set_ylabel("fraction of finals (CDF)")
        for fraction, style in ((0.5, ":"), (0.95, "--")):
            hist.axvline(percentile(latencies, fraction), color="black", linestyle=style,
                         label=f"p{round(fraction * 100)} {percentile(latencies, fraction):.2f} s")
        hist.legend(loc="upper left")
    hist.set_xlabel("final latency, s")
    hist.set_ylabel("finals")
    hist.set_title("final latency distribution")
    points = [r for r in records if r["latency_sec"] is not None]
    scatter.scatter([r["received_at_sec"] for r in points], [r["latency_sec"] for r in points],
                    c=[r["channel"] for r in points], cmap="viridis", s=12)
    scatter.axvline(result.config.duration_sec, color="grey", linestyle="--", label="--duration")
    scatter.set_xlabel("time since start of run, s")
    scatter.set_ylabel("final latency, s")
    scatter.set_title("final latency over time (colour: channel)")
    scatter.legend(loc="upper left")
    fig.suptitle(title or f"{result.config.channels} channels, "
                 f"{'realtime' if result.config.realtime else 'as fast as possible'}")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
