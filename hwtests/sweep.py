"""Capacity sweep to the knee: more concurrent realtime streams, step by step, until p95 final
latency passes the limit or a final is lost. The load tester (clients/loadtest) runs each try and
its `step_failure` rule decides, as in bench/sweep.py, so hwtests and the bench agree on a step;
hwtests.knee retries the steps at the knee (best of three) so a rerun on the same box agrees.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from clients.loadtest import Clip
from clients.loadtest.report import ProgressLine, compute_figures, step_failure
from clients.loadtest.runner import LoadConfig, run_load
from hwtests.gpu import GpuSampler
from hwtests.knee import MAX_RETRIES, find_knee, knee_spread, majority_held, steps_apart

PAUSE_BETWEEN_STEPS_SEC = 2.0  # lets sessions end and buffers free before the next step


def _try_step(address: str, pid: int | None, config: LoadConfig, label: str, quiet: bool) -> dict[str, Any]:
    """One run of the load tester at one stream count: its figures and the GPU's."""
    progress = None if quiet else ProgressLine(sys.stderr, label=label)
    gpu = GpuSampler().start()
    try:
        result = run_load(config, address, pid, progress)
    finally:
        gpu_figures = gpu.stop()
        if progress:
            progress.close()
    return {**compute_figures(result), **gpu_figures}


def run_sweep(address: str, pid: int | None, clips: Sequence[Clip], counts: Sequence[int], *,
              duration_sec: float, partials: bool, p95_limit_sec: float, quiet: bool = False,
              max_retries: int = MAX_RETRIES) -> dict[str, Any]:
    """{"partials", "p95_limit_sec", "max_streams", "stopped_by", "steps", "retries", "knee"}.
    max_streams is the confirmed knee (None: the first count did not hold); stopped_by is why the
    count above it gave way (None: every count held, so the knee lies beyond the list). steps has
    each count's first try with "held" (most of its tries held), "tries" (held per try) and
    "p95_tries_sec"; retries has every later try's figures, "held" being that try's."""
    first: dict[int, dict[str, Any]] = {}
    retries: list[dict[str, Any]] = []

    def try_step(count: int) -> bool:
        number = 1 + (count in first) + sum(r["channels"] == count for r in retries)
        label = f"    {count} streams{f' (try {number})' if number > 1 else ''} "
        config = LoadConfig(channels=count, duration_sec=duration_sec, clips=tuple(clips), realtime=True,
                            partials=partials)
        figures = _try_step(address, pid, config, label, quiet)
        figures["stopped_by"] = step_failure(figures, p95_limit_sec)
        figures["held"] = figures["stopped_by"] is None
        figures["try"] = number
        if count in first:
            retries.append(figures)
        else:
            first[count] = figures
        if not quiet:
            p95 = figures["final_latency_p95_sec"]
            print(f"{label.rstrip()}: p95 {'n/a' if p95 is None else f'{p95:.3f} s'}, "
                  f"{figures['stopped_by'] or 'held'}", file=sys.stderr, flush=True)
        time.sleep(PAUSE_BETWEEN_STEPS_SEC)
        return bool(figures["held"])

    search = find_knee(counts, try_step, max_retries)
    steps = []
    for count, step in first.items():
        tries = [step, *(r for r in retries if r["channels"] == count)]
        steps.append({**step, "held": majority_held(search.tries[count]), "tries": search.tries[count],
                      "p95_tries_sec": [t["final_latency_p95_sec"] for t in tries]})
    stopped_by = None
    if search.failed_at is not None:
        failures = [t for t in (first[search.failed_at], *retries)
                    if t["channels"] == search.failed_at and not t["held"]]
        stopped_by = failures[-1]["stopped_by"]
    low, high = knee_spread(counts, search.tries)
    knee = {"streams": search.knee, "confirmed": search.confirmed, "retries": search.retries,
            "tries": {str(c): t for c, t in search.tries.items()},
            "spread": {"low": low, "high": high, "steps": steps_apart(counts, low, high)}}
    if not quiet:
        print(f"    knee: {describe_knee(knee)}", file=sys.stderr, flush=True)
    return {"partials": partials, "p95_limit_sec": p95_limit_sec, "max_streams": search.knee,
            "stopped_by": stopped_by, "steps": steps, "retries": retries, "knee": knee}


def describe_knee(knee: dict[str, Any]) -> str:
    """E.g. "20 streams, confirmed; tries at the knee: 20 held 2 of 2, 24 held 1 of 3; spread 20-24
    streams (1 step)": spread is what the unluckiest and the luckiest single pass would have read."""
    spread = knee["spread"]

    def streams(n: int | None) -> str:
        return "none" if n is None else str(n)

    retried = [f"{c} held {sum(t)} of {len(t)}" for c, t in knee["tries"].items() if len(t) > 1]
    confirmed = "confirmed" if knee["confirmed"] else "NOT confirmed (retry budget spent)"
    return (f"{streams(knee['streams'])} streams, {confirmed}"
            f"{'; tries at the knee: ' + ', '.join(retried) if retried else ''}; spread "
            f"{streams(spread['low'])}-{streams(spread['high'])} streams "
            f"({spread['steps']} step{'' if spread['steps'] == 1 else 's'})")


def all_tries(sweep: dict[str, Any], count: int) -> list[dict[str, Any]]:
    first = [s for s in sweep["steps"] if s["channels"] == count]
    return first + [r for r in sweep.get("retries", []) if r["channels"] == count]


def max_streams_within(sweep: dict[str, Any], p95_limit_sec: float) -> int | None:
    """The largest count of the sweep's unbroken run of counts that held within a tighter limit
    (the verdict's classes each have their own; the sweep stopped at the loosest): most of a
    count's tries must hold, as for the knee."""
    best = None
    for step in sweep["steps"]:
        if not majority_held([step_failure(t, p95_limit_sec) is None for t in all_tries(sweep, step["channels"])]):
            break
        best = step["channels"]
    return best
