"""Capacity sweep: raise the channel count until p95 final latency passes a limit or a final is lost.

    python bench/sweep.py                                   # starts the appliance, 40 s per step
    python bench/sweep.py --counts 1,2,4,8 --duration 20 --partials --json sweep.json
    python bench/sweep.py --server-arg=--max-sessions=64 --audio ../shared/audio

Runs the load tester's runner (clients/loadtest) in-process, step after step, against one server
(started here unless --server is given). A step holds when its p95 final latency is at most
--p95-limit, no final was lost and no error was counted; the sweep stops at the first step that
does not hold. Prints one table row per step and "knee: N channels", the largest count that held.
Every load option of `python -m clients.loadtest` applies to each step (--realtime is the default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

from clients.loadtest import UsageError, add_load_arguments, add_target_arguments, load_config, target_server
from clients.loadtest.report import ProgressLine, compute_figures
from clients.loadtest.report import step_failure as verdict  # shared with hwtests/sweep.py
from clients.loadtest.runner import run_load

DEFAULT_COUNTS = (1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64)
PAUSE_BETWEEN_STEPS_SEC = 2.0  # lets the server settle (sessions end, buffers free)
COLUMNS = (("channels", "{:>8}"), ("p50 s", "{:>7}"), ("p95 s", "{:>7}"), ("p99 s", "{:>7}"),
           ("finals", "{:>7}"), ("lost", "{:>5}"), ("errors", "{:>6}"), ("CPU %", "{:>6}"),
           ("peak RSS MB", "{:>12}"))


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel counts, got {text!r}") from None
    if not counts or any(n < 1 for n in counts) or counts != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"counts must be increasing and >= 1, got {text!r}")
    return counts


def table_row(figures: dict) -> str:
    def sec(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"
    server = figures["server"] or {}
    cpu, rss = server.get("cpu_mean_pct"), server.get("rss_peak_mb")
    cells = (figures["channels"], sec(figures["final_latency_p50_sec"]), sec(figures["final_latency_p95_sec"]),
             sec(figures["final_latency_p99_sec"]), figures["finals"], figures["finals_lost"],
             sum(figures["errors"].values()), "n/a" if cpu is None else f"{cpu:.0f}",
             "n/a" if rss is None else f"{rss:.1f}")
    return " ".join(fmt.format(cell) for (_, fmt), cell in zip(COLUMNS, cells, strict=True))


def table_header() -> str:
    return " ".join(fmt.format(name) for name, fmt in COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_load_arguments(parser, duration_sec=40.0, with_channels=False)
    add_target_arguments(parser)
    parser.add_argument("--counts", type=parse_counts, default=list(DEFAULT_COUNTS),
                        help=f"channel counts to try, in order (default: {','.join(map(str, DEFAULT_COUNTS))})")
    parser.add_argument("--p95-limit", type=float, default=2.0, help="p95 final latency that still holds, s")
    parser.add_argument("--json", metavar="OUT", help="write every step's figures and the knee here")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    try:
        base, skipped = load_config(args, channels=1)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if skipped:
        print(f"skipped (longer than --max-file-sec): {', '.join(skipped)}", file=sys.stderr)

    steps: list[dict] = []
    knee, stopped_by = None, None
    print(f"sweep: {len(base.clips)} files, {args.duration:g} s per step, "
          f"{'realtime' if base.realtime else 'as fast as possible'}, partials "
          f"{'on' if base.partials else 'off'}, p95 limit {args.p95_limit:g} s", flush=True)
    try:
        with target_server(args) as target:
            print(table_header(), flush=True)
            for count in args.counts:
                progress = None if args.quiet else ProgressLine(sys.stderr, label=f"{count} channels ")
                try:
                    result = run_load(dataclasses.replace(base, channels=count), target.address, target.pid,
                                      progress)
                finally:
                    if progress:
                        progress.close()
                figures = compute_figures(result)
                steps.append(figures)
                print(table_row(figures), flush=True)
                stopped_by = verdict(figures, args.p95_limit)
                if stopped_by:
                    break
                knee = count
                time.sleep(PAUSE_BETWEEN_STEPS_SEC)
    except (RuntimeError, TimeoutError) as err:
        print(f"error: the server did not start: {err}", file=sys.stderr)
        return 1
    if stopped_by:
        print(f"stopped at {steps[-1]['channels']} channels: {stopped_by}")
    else:
        print("every count held; raise --counts to find the knee")
    print(f"knee: {knee} channels" if knee else "knee: none (the first step did not hold)")
    if args.json:
        Path(args.json).write_text(json.dumps({"p95_limit_sec": args.p95_limit, "knee_channels": knee,
                                               "stopped_by": stopped_by, "steps": steps}, indent=2) + "\n",
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
