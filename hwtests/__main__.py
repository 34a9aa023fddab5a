"""python -m hwtests --quick|--full|--tiny --out DIR [--profile P] [--mic]: qualify this box.

Starts its own appliance on free loopback ports (the profile `auto` picks, or --profile), runs the
steps in order, each timed with a progress line on stderr, and writes report.json, report.md and
report.html into DIR. Exit 0 when every step ran, 1 when one failed (the report is still written,
that step's figures None), 2 for bad arguments. --mic adds the audio input step (list inputs,
record 3 s, level and clipping). --quick fits ~10 minutes on a 2-core CPU box;
--tiny (two small steps) is for the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hwtests import html_report, mic, report, steps, verdict
from hwtests.speech import speech_set
from hwtests.sweep import run_sweep

# (stream counts, seconds of audio each step keeps starting). Quick stops early at the knee anyway;
# full reaches past the 50-session default (max_sessions is raised to match, below).
MODES = {
    "tiny": ((1, 2), 2.0),
    "quick": ((1, 2, 4, 8, 12, 16, 20, 24, 32), 20.0),
    "full": ((1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128), 40.0),
}
STEP_NAMES = ("inventory", "cold start", "single stream", "noise", "accuracy", "sweep: finals only",
              "sweep: with partials")
T = TypeVar("T")


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps: expected comma-separated stream counts, got {text!r}") from None
    if not counts or any(n < 1 for n in counts) or list(counts) != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"--steps: counts must be increasing and >= 1, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hwtests", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    for name, (counts, step_sec) in MODES.items():
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name,
                          help=f"sweep steps {','.join(map(str, counts))}, {step_sec:g} s each")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json, report.md, report.html")
    parser.add_argument("--profile", help="model load profile for the server (default: auto)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra `serve` argument, repeatable; write flags as --server-arg=--compute-type=int8")
    parser.add_argument("--steps", type=parse_counts, help="stream counts for both sweeps (overrides the mode's)")
    parser.add_argument("--step-sec", type=float, help="seconds each sweep step keeps starting audio")
    parser.add_argument("--quiet", action="store_true", help="no per-second sweep progress")
    parser.add_argument("--mic", action="store_true",
                        help=f"also check audio input: list inputs, record {mic.RECORD_SEC:g} s, report level/clipping")
    parser.add_argument("--mic-device", metavar="DEVICE",
                        help="the input to record (index or part of its name, as the mic client's --device)")
    args = parser.parse_args(argv)
    counts, step_sec = MODES[args.mode]
    args.counts = args.steps or counts
    args.step_sec = args.step_sec or step_sec
    if args.step_sec <= 0:
        parser.error("--step-sec must be > 0")
    if args.mic_device is not None and not args.mic:
        parser.error("--mic-device needs --mic")
    return args


def server_arguments(args: argparse.Namespace) -> list[str]:
    extra = list(args.server_arg)
    if args.profile:
        extra += ["--profile", args.profile]
    # The largest step must not be refused by the session cap: that would read as a knee.
    if not any(a.startswith("--max-sessions") for a in extra):
        extra.append(f"--max-sessions={max(args.counts) + 4}")
    return extra


def server_env() -> dict[str, str]:
    """Environment for the measured server, over this process's own. Every stream comes from this
    one host: lift the per-IP cap (default 16), as the load tester does. Its other doors stay shut or
    on free ports: inside a running container (`docker compose exec`) the appliance already holds
    8001, 8002 and 10300, and a second mDNS announcement of its name would stop start-up."""
    return {"STT_SERVER_MAX_SESSIONS_PER_IP": "0", "STT_WYOMING_PORT": "0", "STT_WYOMING_ZEROCONF": "false",
            "STT_OPENAI_PORT": "0", "STT_WEBSOCKET_PORT": "0"}


def attempt(clock: steps.StepClock, name: str, fn: Callable[[], T], failed: T) -> T:
    """Run one step; a failed step is reported (figures None) and the others still run, since one
    broken measurement should not cost the operator the other nine minutes."""
    try:
        with clock.step(name):
            return fn()
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return failed


def _empty_sweep(partials: bool) -> dict[str, Any]:
    return {"partials": partials, "p95_limit_sec": verdict.SWEEP_P95_LIMIT_SEC, "max_streams": None,
            "stopped_by": "step failed", "steps": [], "retries": [], "knee": None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = steps.StepClock(len(STEP_NAMES) + (1 if args.mic else 0))
    server_args = server_arguments(args)
    recordings = speech_set()
    env = server_env()
    inventory: dict[str, Any] = attempt(clock, "inventory", lambda: steps.inventory(server_args), {})
    # Before the server starts: nothing else is using the CPU or the sound device yet.
    audio_input = None
    if args.mic:
        audio_input = attempt(clock, "audio input", lambda: mic.check_microphone(args.mic_device), None) or {
            "assessment": f"not checked: {clock.timings['audio input']['error']}"}
    with clock.step("cold start"):
        appliance, cold_start_sec = steps.cold_start(server_args, env)
    try:
        address, pid = appliance.address, appliance.pid
        single: dict[str, Any] = attempt(clock, "single stream", lambda: steps.single_stream(address, recordings),
                                         {"final_p50_s": None, "final_p95_s": None, "files": []})
        noise: dict[str, Any] = attempt(clock, "noise", lambda: steps.noise_words(address),
                                        {"noise_words": None, "noise": {}})
        accuracy = attempt(clock, "accuracy", lambda: steps.accuracy(single, recordings, inventory),
                           {"stream_wer": None, "offline_wer": None, "files": single["files"]})
        from clients.loadtest import load_clips

        clips, _ = load_clips([r.path for r in recordings])
        capacity: dict[str, dict[str, Any]] = {}
        for key, partials in (("finals_only", False), ("partials", True)):
            def sweep(partials: bool = partials) -> dict[str, Any]:
                return run_sweep(address, pid, clips, args.counts, duration_sec=args.step_sec, partials=partials,
                                 p95_limit_sec=verdict.SWEEP_P95_LIMIT_SEC, quiet=args.quiet)
            capacity[key] = attempt(clock, STEP_NAMES[5 if not partials else 6], sweep, _empty_sweep(partials))
    finally:
        appliance.stop()
    judged = verdict.judge(capacity, noise["noise_words"], audio_input)
    return {
        "host": socket.gethostname(),
        "mode": args.mode,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": inventory.get("profile"),
        "model": inventory.get("model"),
        "cold_start_s": cold_start_sec,
        "latency": {"final_p50_s": single["final_p50_s"], "final_p95_s": single["final_p95_s"]},
        "capacity": capacity,
        "accuracy": {"stream_wer": accuracy["stream_wer"], "offline_wer": accuracy["offline_wer"],
                     "noise_words": noise["noise_words"], "offline_baseline": accuracy.get("offline_baseline"),
                     "files": accuracy["files"], "noise": noise["noise"]},
        "audio_input": audio_input,
        "verdict": judged["verdict"],
        "classes": judged["classes"],
        "warnings": judged["warnings"],
        "recommended_config": verdict.recommended_config(capacity, inventory),
        "server_args": server_args,
        "sweep_step_sec": args.step_sec,
        "steps": clock.timings,
        "inventory": inventory,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args)
    except (RuntimeError, TimeoutError) as err:
        print(f"hwtests: the appliance did not start: {err}", file=sys.stderr)
        return 1
    paths = [report.write_json(result, args.out), report.write_markdown(result, args.out),
             html_report.write_html(result, args.out)]
    for name, sweep in result["capacity"].items():
        print(f"{name.replace('_', ' ')}: knee {report.knee_text(sweep) or sweep['max_streams']}")
    print(f"verdict: {result['verdict']}; report: {', '.join(str(p) for p in paths)}")
    return 1 if any(t["error"] for t in result["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
