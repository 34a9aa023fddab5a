"""Fuzz the gRPC API of a real appliance: thousands of generated requests, every refusal must carry a code.

    python bench/fuzz.py                                   # 10,000 cases against a server it starts
    python bench/fuzz.py --cases 300 --seed 7              # a short run (another sample of inputs)
    python bench/fuzz.py --workers 4 --json fuzz.json      # 4 cases in flight; the figures as JSON
    python bench/fuzz.py --server 127.0.0.1:50051 --http-url http://127.0.0.1:8000   # a running server

Each case is a CreateSession request (generated: hostile ids, attribute maps with YAML bombs, nested
lists, 5000-digit numbers, NaN, odd enums and floats; or raw protobuf bytes with invalid UTF-8 and
broken wire format), then a stream into the session (Front_Center.wav, a fuzzed chunk sequence, or raw
messages); the generators are in tests/adversarial/fuzzing.py. The regression cases of that module run
first. A case is ok, coded (each refusal's details start with ERR10xx under the status of that code)
or uncoded (any other status, or no answer within the timeout).

The server this starts lifts the per-client rate and session caps (every case comes from one IP at
machine speed; `--shipped-limits` keeps them). If it dies, or stops answering (a timeout and a failed
health check), that is a crash: the cases in flight are recorded, the server is restarted and the run
goes on (an external --server ends the run instead).

At the end it prints cases, ok, coded (by code), uncoded (up to 20 distinct failures, the smallest
input of each with its status and details), crashes, tracebacks in the server log (own server only),
and the server's health (grpc.health.v1, HTTP /health, and whether an honest stream of
Front_Center.wav still gets "front center"). Exit 0 when there was no crash, no uncoded outcome and the
server is healthy at the end (a box that refuses every honest client afterwards is down too), else 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients`, `appliance` and `tests` importable
    sys.path.insert(0, str(REPO_ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings

from clients.local_server import LocalAppliance
from tests.adversarial.fuzzing import (
    FUZZ_SERVER_ENV,
    Case,
    Limits,
    Outcome,
    Report,
    Runner,
    active_sessions,
    cases,
    grpc_health,
    honest_transcript,
    http_health,
    regression_cases,
    short,
    traceback_kinds,
)


class Target:
    """The server under test: a LocalAppliance this script restarts after a crash, or an address."""

    def __init__(self, args: argparse.Namespace, limits: Limits):
        self.args = args
        self.limits = limits
        self.lock = threading.Lock()
        self.generation = 0
        self.crashes: list[dict] = []
        self.logs: list[str] = []  # logs of servers that crashed and were replaced
        self.stop = threading.Event()
        self.server: LocalAppliance | None = None
        if args.server:
            self.address, self.http_url = args.server, args.http_url
        else:
            self._start()
        self.runner = Runner(self.address, limits)

    def _start(self) -> None:
        env = {} if self.args.shipped_limits else FUZZ_SERVER_ENV
        self.server = LocalAppliance(env=env).start()
        self.address, self.http_url = self.server.address, self.server.http_url

    def _process(self) -> subprocess.Popen | None:
        return self.server.process if self.server is not None else None

    def own_server_died(self) -> bool:
        process = self._process()
        return process is not None and process.poll() is not None

    def check(self, generation: int, outcome: Outcome) -> bool:
        """After a case: False (and a crash recorded, the server replaced) when the server is down."""
        timed_out = any(c.status == "TIMEOUT" for c in outcome.calls)
        unreachable = any(c.status == "UNAVAILABLE" and not c.code for c in outcome.calls)
        if not (self.own_server_died() or timed_out or unreachable):
            return True
        with self.lock:
            if generation != self.generation:
                return False  # someone else already handled this crash
            process = self._process()
            if process is not None and process.poll() is not None:
                how = f"the server process died (exit {process.returncode})"
            else:
                health = grpc_health(self.address)
                if health == "SERVING":
                    return True
                how = f"the server stopped answering (grpc health: {health})"
            self.crashes.append({"how": how, "case": outcome.describe()})
            print(f"\nCRASH: {how} after:\n  {outcome.describe()}", flush=True)
            self.generation += 1
            if self.server is None or process is None:
                self.stop.set()
                return False
            self.logs.append(self.server.log())
            if process.poll() is None:
                process.kill()  # wedged: a graceful drain would only wait out its timeout
            self.server.__exit__(None, None, None)
            old = self.runner
            self._start()
            self.runner = Runner(self.address, self.limits)
            old.close()
            print(f"restarted the server on {self.address}", flush=True)
            return False

    def log(self) -> str | None:
        if self.server is None:
            return None
        return "\n".join([*self.logs, self.server.log()])

    def close(self) -> None:
        self.runner.close()
        if self.server is not None:
            self.server.__exit__(None, None, None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cases", type=int, default=10_000, help="cases to run, regression cases included")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (the same seed, the same inputs)")
    parser.add_argument("--server", metavar="HOST:PORT", help="fuzz a running server instead of starting one")
    parser.add_argument("--http-url", default="", help="with --server: its HTTP plane, for /health at the end")
    parser.add_argument("--workers", type=int, default=2, help="cases in flight at once")
    parser.add_argument("--create-timeout-sec", type=float, default=15.0)
    parser.add_argument("--stream-timeout-sec", type=float, default=60.0)
    parser.add_argument("--max-stream-mb", type=float, default=4.0, help="audio sent per case, at most (MB)")
    parser.add_argument("--shipped-limits", action="store_true",
                        help="start the server with the shipped per-client rate and session caps")
    parser.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--json", metavar="OUT", help="write the figures to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = Limits(args.create_timeout_sec, args.stream_timeout_sec, int(args.max_stream_mb * 1024 * 1024))
    started = time.monotonic()
    target = Target(args, limits)
    print(f"fuzzing {target.address} with {args.cases} cases, seed {args.seed}, {args.workers} workers", flush=True)
    report = Report()
    lost = 0
    last_progress = [time.monotonic()]
    slots = threading.BoundedSemaphore(args.workers * 2)

    def progress(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_progress[0] >= args.progress_every:
            last_progress[0] = now
            elapsed = now - started
            print(f"[{report.cases}/{args.cases}] {elapsed:.0f} s, {report.cases / max(elapsed, 1e-9):.1f} cases/s: "
                  f"ok {report.ok}, coded {report.cases - report.ok - report.uncoded}, uncoded {report.uncoded}, "
                  f"crashes {len(target.crashes)}", flush=True)

    def work(case: Case) -> None:
        nonlocal lost
        try:
            if target.stop.is_set():
                return
            generation, runner = target.generation, target.runner
            outcome = runner.run(case)
            if target.check(generation, outcome):
                report.add(outcome)
            else:
                with report.lock:
                    lost += 1  # in flight while the server went down: not judged
            progress()
        finally:
            slots.release()

    def submit(pool: ThreadPoolExecutor, case: Case) -> None:
        slots.acquire()
        pool.submit(work, case)

    try:
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            fixed = regression_cases()[:args.cases]
            for case in fixed:
                submit(pool, case)
            generated_count = args.cases - len(fixed)
            if generated_count > 0:
                @seed(args.seed)
                @settings(max_examples=generated_count, deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(cases(max_chunk_bytes=1_048_576))
                def generated(case: Case) -> None:
                    if not target.stop.is_set():
                        submit(pool, case)

                generated()
        progress(force=True)
        grpc_status = grpc_health(target.address)
        http_status = http_health(target.http_url) if target.http_url else "n/a (no --http-url)"
        time.sleep(1.0)  # streams cancelled by the last cases end on the server's side
        sessions_left = active_sessions(target.http_url) if target.http_url else "n/a (no --http-url)"
        try:
            text = honest_transcript(target.address)
            honest = "ok" if "front" in text and "center" in text else f"wrong: {text!r}"
        except Exception as err:  # reported, not raised: the figures matter more
            honest = f"failed: {err}"
        log = target.log()
    finally:
        target.close()

    kinds = traceback_kinds(log) if log is not None else None
    elapsed = time.monotonic() - started
    print()
    print(f"cases: {report.cases} in {elapsed:.0f} s ({report.cases / max(elapsed, 1e-9):.1f}/s)"
          + (f"; {lost} more were in flight when the server went down" if lost else ""))
    print(f"ok: {report.ok}")
    coded_cases = report.cases - report.ok - report.uncoded
    print(f"coded: {coded_cases} cases; refusals by code: "
          + (", ".join(f"{code} {n}" for code, n in sorted(report.coded.items())) or "none"))
    for _code, call in sorted(report.coded_examples.items()):
        print(f"  e.g. {call.phase}: {call.status} {short(call.details, 150)}")
    print(f"uncoded: {report.uncoded} cases, {len(report.distinct)} distinct")
    for line in report.uncoded_lines(20):
        print("  " + line.replace("\n", "\n  "))
    print(f"crashes: {len(target.crashes)}")
    for crash in target.crashes[:20]:
        print(f"  {crash['how']} after:\n    {crash['case']}")
    if kinds is None:
        print("tracebacks in the server log: n/a (external server)")
    else:
        print(f"tracebacks in the server log: {sum(kinds.values())}")
        for line, n in kinds.most_common(20):
            print(f"  {n} x {line}")
    print(f"server health at the end: grpc.health.v1 {grpc_status}, HTTP /health {http_status}, "
          f"honest Front_Center.wav transcript {honest}, active sessions after the run {sessions_left} "
          "(each case ends its session: more than 0 is a leak)")
    healthy = grpc_status == "SERVING" and honest == "ok" and http_status in ("200", "n/a (no --http-url)")
    failed = bool(target.crashes or report.uncoded or not healthy)
    print("FAIL" if failed else "PASS", "" if healthy else "(the server is not healthy at the end)")
    if args.json:
        figures = {**report.as_dict(), "seconds": round(elapsed, 1), "seed": args.seed, "lost_in_crash": lost,
                   "crashes": target.crashes, "tracebacks": dict(kinds) if kinds is not None else None,
                   "health": {"grpc": grpc_status, "http": http_status, "honest_transcript": honest,
                              "active_sessions_after": sessions_left}}
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
