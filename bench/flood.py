"""Session flood: open sessions far past every cap at once, and check the server stays bounded.

    python bench/flood.py                                      # 200 attempts against the shipped caps
    python bench/flood.py --server-env STT_SERVER_MAX_SESSIONS=8 --attempts 400 --json flood.json
    python bench/flood.py --server 127.0.0.1:50051 --server-pid 1234 --rss-budget-mb 1024

Every attempt runs on its own thread with its own connection, all released at once: CreateSession,
then (when accepted) one real recording streamed (as fast as possible unless --realtime) and its
finals read. Each attempt ends accepted-and-completed or with the error it got (at CreateSession or
in the stream). Meanwhile the server's RSS is sampled. Exit 1 unless every refusal carried an ERR
code, nothing hung past --timeout-sec, RSS stayed under the budget (the one the server announces in
its ready file, else --rss-budget-mb, else STT_SERVER_MEMORY_BUDGET_BYTES given with --server-env;
none is checked without one), grpc.health.v1 says SERVING afterwards and a fresh session still
transcribes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.loadtest import (
    SAMPLE_RATE_HZ,
    UsageError,
    add_target_arguments,
    default_audio,
    find_audio,
    load_clips,
    target_server,
)
from clients.loadtest.procstats import ProcSampler, read_sample
from clients.loadtest.report import format_server
from clients.loadtest.runner import error_code
from clients.sdk import SttClient, SttError

MB = 1024 * 1024


@dataclass
class Attempt:
    index: int
    file: str
    stage: str = "pending"  # "create"/"stream": refused there; "done": completed; "hung": cut at --timeout-sec
    code: str | None = None  # ERR10xx, else the gRPC status name; None when completed
    coded: bool = True  # False: the refusal carried no ERR code
    accepted: bool = False  # CreateSession succeeded
    finals: int = 0
    seconds: float = 0.0


def run_attempt(attempt: Attempt, address: str, clip, args: argparse.Namespace, go: threading.Event,
                clients: list[SttClient], lock: threading.Lock) -> None:
    client = SttClient(address)
    with lock:
        clients.append(client)
    go.wait()
    started = time.monotonic()
    try:
        attempt.stage = "create"
        session = client.create_session(vad_mode="continue")
        attempt.stage, attempt.accepted = "stream", True
        for result in client.stream_audio(session, clip.pcm16, SAMPLE_RATE_HZ, chunk_ms=args.chunk_ms,
                                          realtime=args.realtime):
            attempt.finals += result.is_final
        attempt.stage = "done"
    except SttError as err:
        attempt.code, attempt.coded = error_code(err), err.code is not None
    except ValueError:  # the channel was closed by the --timeout-sec watchdog before the call began
        attempt.stage = "hung"
    finally:
        attempt.seconds = time.monotonic() - started
        client.close()


def health_status(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                timeout=10)
        except grpc.RpcError as err:
            return f"unreachable ({err.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def post_flood_session(address: str, clip) -> str | None:
    """None when a fresh session streams a file and gets its finals; else what went wrong."""
    last = ""
    for _ in range(3):  # a rate limiter may still be refilling just after the flood
        try:
            with SttClient(address) as client:
                session = client.create_session(vad_mode="continue")
                finals = [r for r in client.stream_audio(session, clip.pcm16, SAMPLE_RATE_HZ, realtime=False)
                          if r.is_final]
            return None if finals else "no final"
        except SttError as err:
            last = str(err)
            time.sleep(2.0)
    return last


def configured_budget_mb(args: argparse.Namespace) -> float | None:
    """The budget given to the server this starts through --server-env (server.memory_budget_bytes)."""
    value = dict(args.server_env).get("STT_SERVER_MEMORY_BUDGET_BYTES", "")
    return int(value) / MB if value.strip().isdigit() and int(value) > 0 and not args.server else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_arguments(parser)
    parser.add_argument("--attempts", type=int, default=200, help="sessions to try (default: 200)")
    parser.add_argument("--audio", action="append", metavar="FILE_OR_DIR",
                        help="recordings to stream, repeatable (default: as the load tester)")
    parser.add_argument("--max-file-sec", type=float, default=40.0, help="skip longer recordings, s")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=False,
                        help="pace each stream at speaking rate (default: as fast as possible)")
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument("--timeout-sec", type=float, default=300.0,
                        help="attempts still open after this are cut and count as hung (default: 300)")
    parser.add_argument("--rss-budget-mb", type=float, help="fail when peak RSS passes this (default: the "
                        "budget the server announces, if any)")
    parser.add_argument("--json", metavar="OUT", help="write the counts and every attempt here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.attempts < 1 or args.chunk_ms <= 0:
            raise UsageError("--attempts must be >= 1 and --chunk-ms > 0")
        clips, _ = load_clips(find_audio(args.audio) if args.audio else default_audio(), args.max_file_sec)
        if not clips:
            raise UsageError("no usable audio: pass --audio FILE_OR_DIR")
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    attempts = [Attempt(i, clips[i % len(clips)].name) for i in range(args.attempts)]
    clients: list[SttClient] = []
    lock, go = threading.Lock(), threading.Event()
    try:
        with target_server(args) as target:
            before = read_sample(target.pid) if target.pid else None
            sampler = ProcSampler(target.pid, interval_sec=0.2).start() if target.pid else None
            threads = [threading.Thread(target=run_attempt, daemon=True,
                                        args=(a, target.address, clips[a.index % len(clips)], args, go, clients,
                                              lock)) for a in attempts]
            for thread in threads:
                thread.start()
            print(f"flood: {args.attempts} attempts released at once against {target.address} "
                  f"({'realtime' if args.realtime else 'as fast as possible'}, {len(clips)} files)", flush=True)
            started = time.monotonic()
            go.set()
            for thread in threads:
                thread.join(timeout=max(0.0, started + args.timeout_sec - time.monotonic()))
            hung = [a for a, t in zip(attempts, threads, strict=True) if t.is_alive()]
            if hung:
                with lock:
                    for client in clients:
                        client.close()  # ends what is still open with CANCELLED
                for thread in threads:
                    thread.join(timeout=10)
                for attempt in hung:  # whatever the cut left in them, these never finished on their own
                    attempt.stage, attempt.code, attempt.coded = "hung", None, True
            wall_sec = time.monotonic() - started
            server = sampler.stop().as_dict() if sampler else None
            health = health_status(target.address)
            post_flood = post_flood_session(target.address, clips[0])
            budget_mb = target.memory_budget_mb or args.rss_budget_mb or configured_budget_mb(args)
    except (RuntimeError, TimeoutError) as err:
        print(f"error: the server did not start: {err}", file=sys.stderr)
        return 1

    outcomes = Counter((a.stage, a.code) for a in attempts)
    accepted = sum(1 for a in attempts if a.accepted)
    uncoded = [a for a in attempts if not a.coded]
    peak_mb = server["rss_peak_mb"] if server else None
    print(f"accepted {accepted} of {args.attempts} ({outcomes[('done', None)]} completed) in {wall_sec:.1f} s")
    for (stage, code), count in sorted(outcomes.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if code:
            print(f"  {'refused at CreateSession' if stage == 'create' else 'stream ended by'}: {code} x{count}")
    print(f"refusals without an ERR code: {len(uncoded)}" + (f"; hung past --timeout-sec: {len(hung)}" if hung else ""))
    print(f"server RSS before {before.rss_bytes / MB:.1f} MB" if before else "server RSS before n/a", end="; ")
    print(format_server(server) + f"; budget {'n/a' if budget_mb is None else f'{budget_mb:.0f} MB'}")
    print(f"health after: {health}; fresh session after: {post_flood or 'ok'}")

    failures = [f"{len(uncoded)} refusals without an ERR code" if uncoded else "",
                f"{len(hung)} attempts hung past --timeout-sec" if hung else "",
                f"peak RSS {peak_mb:.1f} MB over the {budget_mb:.0f} MB budget"
                if budget_mb is not None and peak_mb is not None and peak_mb > budget_mb else "",
                f"health {health}" if health != "SERVING" else "",
                f"fresh session failed: {post_flood}" if post_flood else ""]
    failures = [f for f in failures if f]
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "attempts": args.attempts, "accepted": accepted, "wall_sec": wall_sec,
            "by_code": dict(Counter(a.code or ("hung" if a.stage == "hung" else "ok") for a in attempts)),
            "uncoded": len(uncoded), "hung": len(hung),
            "server": server, "rss_before_mb": before.rss_bytes / MB if before else None,
            "memory_budget_mb": budget_mb, "health": health, "post_flood_error": post_flood,
            "failures": failures, "attempt_records": [asdict(a) for a in attempts]}, indent=2) + "\n",
            encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
