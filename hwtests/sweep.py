"""Capacity sweep to the knee: more concurrent realtime streams, step by step, until p95 final
latency passes the limit or a final is lost. The load tester (clients/loadtest) runs each step and
its `step_failure` rule decides, as in bench/sweep.py, so hwtests and the bench agree on a knee.
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

PAUSE_BETWEEN_STEPS_SEC = 2.0  # lets sessions end and buffers free before the next step


def run_sweep(address: str, pid: int | None, clips: Sequence[Clip], counts: Sequence[int], *,
              duration_sec: float, partials: bool, p95_limit_sec: float, quiet: bool = False) -> dict[str, Any]:
    """{"partials", "p95_limit_sec", "max_streams", "stopped_by", "steps": [figures + GPU figures]}.
    max_streams is the largest count that held (None: the first did not); stopped_by is why the
    sweep stopped (None: every count held, so the knee lies beyond the list)."""
    steps: list[dict[str, Any]] = []
    max_streams, stopped_by = None, None
    for count in counts:
        config = LoadConfig(channels=count, duration_sec=duration_sec, clips=tuple(clips), realtime=True,
                            partials=partials)
        progress = None if quiet else ProgressLine(sys.stderr, label=f"    {count} streams ")
        gpu = GpuSampler().start()
        try:
            result = run_load(config, address, pid, progress)
        finally:
            gpu_figures = gpu.stop()
            if progress:
                progress.close()
        figures = {**compute_figures(result), **gpu_figures}
        stopped_by = step_failure(figures, p95_limit_sec)
        figures["held"] = stopped_by is None
        steps.append(figures)
        if not quiet:
            p95 = figures["final_latency_p95_sec"]
            print(f"    {count} streams: p95 {'n/a' if p95 is None else f'{p95:.3f} s'}, "
                  f"{stopped_by or 'held'}", file=sys.stderr, flush=True)
        if stopped_by:
            break
        max_streams = count
        time.sleep(PAUSE_BETWEEN_STEPS_SEC)
    return {"partials": partials, "p95_limit_sec": p95_limit_sec, "max_streams": max_streams,
            "stopped_by": stopped_by, "steps": steps}


def max_streams_within(sweep: dict[str, Any], p95_limit_sec: float) -> int | None:
    """The largest count of the sweep's unbroken run of steps that held within a tighter limit
    (the verdict's classes each have their own; the sweep stopped at the loosest)."""
    best = None
    for step in sweep["steps"]:
        if step_failure(step, p95_limit_sec):
            break
        best = step["channels"]
    return best
