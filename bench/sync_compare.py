"""Old build against new in one sitting, under the synchronized-end harness (../shared/bench/stream_bench.py).

    flock -x /tmp/cpu.lock timeout 420 .venv/bin/python bench/sync_compare.py \
        --build base=/tmp/base29 --build new=. --clients 16 24 32 48 --runs 2 --out sync.jsonl
    ... --partials --clients 8 16 24            # sessions with partials
    ... --profile                                # where the server's time goes (below)
    ... --build always=. --server-env always:STT_SERVER_SPECULATIVE_FINALS=always   # one tree, two settings
    ... --manifest ../shared/audio/more/manifest.tsv --utterances sent_en_vctk_p225_003 \
        sent_en_vctk_p227_023     # other recordings: here a 6 s and an 11 s sentence (10 and 15 s windows)
    ... --noise babble --snr 10    # the utterances mixed with noise as bench/wer.py mixes the dev set

Every build's appliance starts once, side by side on its own port (its own tree's code and config,
the same .venv python; an idle appliance takes next to no CPU); then for each client count, each build
in turn gets N clients that start and end together (`--runs` runs). The builds alternate per count,
so drift on a shared box falls on both alike. Prints one line per build and count
(p95 / median final latency, first partial, finals delivered, server CPU) and appends stream_bench's
JSON rows, labelled with the build, to --out.

--profile: each server runs with --log-metrics, and after each count the script prints the server's
CPU seconds per thread group (decode slots, VAD, the event loop, gRPC; read from /proc, threads
named by `py-spy dump`, PY_SPY or on PATH) and its decode batches by kind (count, sizes, encoder
window, seconds in the model, seconds queued) from the log.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clients.dev_set import dev_set
from clients.noise import NOISES, noisy_copies

SHARED_BENCH = REPO.parent / "shared" / "bench" / "stream_bench.py"
MANIFEST = REPO.parent / "shared" / "audio" / "manifest.tsv"
SENTENCES = ("sent_en_librispeech_dev-clean_1272-128104-0000", "sent_en_librivox_sense_and_sensibility_0870",
             "sent_en_librivox_sense_and_sensibility_0890", "sent_en_librivox_sense_and_sensibility_0920")
READY_WAIT_SEC = 90.0
NATIVE = "native (CTranslate2 workers, ONNX Runtime)"  # threads Python did not start


def start_server(tree: Path, port: int, log_path: Path, extra: list[str],
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    ready = Path(tempfile.mkdtemp()) / "ready.json"
    env = dict(os.environ, STT_SERVER_MAX_SESSIONS_PER_IP="0", STT_SERVER_MAX_SESSIONS="128", STT_OPENAI_PORT="0",
               STT_WEBSOCKET_PORT="0",
               PYTHONPATH=str(tree), **(extra_env or {}))
    cmd = [sys.executable, "-m", "appliance", "serve", "--port", str(port), "--metrics-port", "0",
           "--config", str(tree / "config" / "server.yaml"), "--model-config", str(tree / "config" / "model.yaml"),
           "--ready-file", str(ready), *extra]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_WAIT_SEC
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server from {tree} did not start; see {log_path}")
        time.sleep(0.2)
    return proc


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread group of `pid` (Python thread names, digits stripped)."""
    py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
    names: dict[int, str] = {}
    try:
        dump = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
        names = {int(tid): name for tid, name in re.findall(r'Thread (\d+) \(\w+\): "([^"]+)"', dump)}
    except (OSError, subprocess.TimeoutExpired):
        pass
    ticks = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(task.name), NATIVE)
        name = name if name == NATIVE else re.sub(r"[-_ ]?\d+$", "", re.sub(r" \(.*\)$", "", name))
        groups[name] += (int(fields[11]) + int(fields[12])) / ticks
    return dict(groups)


BATCH_LINE = re.compile(r"decode batch of (\d+) \((\d+) final(?:, (\d+) speculative)?(?:, ([\d/?]+) s window)?.*?\): "
                        r"([\d.]+) s audio in ([\d.]+) s after ([\d.]+) s queued")


def batch_profile(log_text: str) -> list[str]:
    """Decode batches by kind from a --log-metrics server log: one line per kind."""
    kinds: dict[str, list[tuple[int, str, float, float]]] = collections.defaultdict(list)
    for m in BATCH_LINE.finditer(log_text):
        size, finals, spec = int(m[1]), int(m[2]), int(m[3] or 0)
        kind = "final" if finals == size else "speculative" if spec == size else "partial" if not finals + spec \
            else "mixed"
        kinds[kind].append((size, m[4] or "?", float(m[6]), float(m[7])))
    lines = []
    for kind, rows in sorted(kinds.items()):
        sizes = collections.Counter(r[0] for r in rows)
        windows = collections.Counter(r[1] for r in rows)
        lines.append(f"{kind:>11}: {len(rows)} calls, {sum(r[0] for r in rows)} decodes, sizes "
                     f"{dict(sorted(sizes.items()))}, windows {dict(windows)}, {sum(r[2] for r in rows):.1f} s in "
                     f"the model (mean {sum(r[2] for r in rows) / len(rows):.3f} s/call), queued mean "
                     f"{sum(r[3] for r in rows) / len(rows):.3f} s max {max(r[3] for r in rows):.3f} s")
    return lines


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def noisy_manifest(utterances: list[str], kind: str, snr_db: float, folder: Path) -> Path:
    """`utterances` of the dev set with `kind` noise at `snr_db`, the same mix bench/wer.py streams
    (clients/noise.py draws each file's noise over the whole set in order), and their manifest."""
    recordings = dev_set()
    mixed = noisy_copies(recordings, kind, snr_db, folder)
    rows = []
    for recording, path in zip(recordings, mixed, strict=True):
        if recording.path.stem in utterances:
            rows.append(f"{path.replace(folder / recording.path.name).name}\t{recording.reference}")
        else:
            path.unlink()
    if len(rows) != len(utterances):
        raise SystemExit(f"--noise: {len(utterances) - len(rows)} of --utterances are not in the dev set")
    manifest = folder / "manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def run_bench(args, label: str, port: int, n: int, pid: int, out: Path, warmup: bool) -> dict:
    cmd = [sys.executable, str(SHARED_BENCH), "--peer", "grpc", "--project", str(REPO), "--port", str(port),
           "--manifest", str(args.manifest), "--only", *args.utterances, "--clients", str(n), "--runs", str(args.runs),
           "--server-pid", str(pid), "--label", label, "--out", str(out), "--pause-s", "1"]
    if warmup:
        cmd.append("--warmup")
    if args.partials:
        cmd.append("--grpc-partials")
    earlier = len(out.read_text().splitlines()) if out.exists() else 0  # --out may hold other sittings
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    summary = next((r for r in rows if r.get("summary") == "clients"), None)
    if summary is None:
        raise SystemExit(f"stream_bench gave no summary:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in out.read_text().splitlines()[earlier:]]
    firsts = sorted(r["first_partial_s"] for r in rows if r.get("peer") == label
                    and r.get("clients") == n and r.get("run", -1) >= 0 and r.get("first_partial_s") is not None)
    summary["first_partial_s_p95"] = firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))] if firsts else None
    return summary


def report(label: str, mode: str, n: int, s: dict) -> None:
    print(f"{label:>6} {mode:8} N={n:>3}: p95 {s['final_latency_s_p95']} median "
          f"{s['final_latency_s_median']} max {s['final_latency_s_max']} first partial "
          f"{s['first_partial_s_median']}/{s['first_partial_s_p95']} ok {s['ok']}/{s['streams']} "
          f"cpu {s['server_cpu_pct_median']}% wer {s['wer_mean']}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="label=tree (a checkout of this project)")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 24, 32])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--partials", action="store_true")
    ap.add_argument("--port", type=int, default=50391)
    ap.add_argument("--server-arg", action="append", default=[], help="label:ARG, passed to that build's serve")
    ap.add_argument("--server-env", action="append", default=[],
                    help="label:KEY=VALUE, in that build's environment (STT_SERVER_SPECULATIVE_FINALS=always)")
    ap.add_argument("--profile", action="store_true", help="thread CPU and decode batches per build and count")
    ap.add_argument("--modes", nargs="+", default=None, choices=("finals", "partials"),
                    help="both: finals-only sessions at --clients, then partials at --partial-clients")
    ap.add_argument("--partial-clients", type=int, nargs="+", default=[8, 16, 24])
    ap.add_argument("--out", type=Path, default=Path("sync_compare.jsonl"))
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="the recordings' manifest.tsv")
    ap.add_argument("--utterances", nargs="+", default=list(SENTENCES),
                    help="recordings from --manifest (client i streams utterance i mod their count)")
    ap.add_argument("--noise", choices=NOISES, help="mix this noise into the utterances")
    ap.add_argument("--snr", type=float, default=10.0, help="with --noise: signal-to-noise ratio, dB")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout` ends us: stop the servers first
    builds = [(b.split("=", 1)[0], Path(b.split("=", 1)[1]).resolve()) for b in args.build]
    logs = Path(tempfile.mkdtemp(prefix="sync_compare_"))
    if args.noise:
        args.manifest = noisy_manifest(args.utterances, args.noise, args.snr, logs)
    modes = args.modes or ["partials" if args.partials else "finals"]
    servers = {}
    warmed: set[str] = set()
    try:
        for i, (label, tree) in enumerate(builds):
            extra = [a.split(":", 1)[1] for a in args.server_arg if a.split(":", 1)[0] == label]
            env = dict(a.split(":", 1)[1].split("=", 1) for a in args.server_env if a.split(":", 1)[0] == label)
            servers[label] = (start_server(tree, args.port + i, logs / f"{label}.log",
                                           extra + (["--log-metrics"] if args.profile else []), env), args.port + i)
        for mode in modes:
            args.partials = mode == "partials"
            for n in args.partial_clients if args.partials and args.modes else args.clients:
                for label, _ in builds:
                    proc, port = servers[label]
                    log_path = logs / f"{label}.log"
                    log_from = log_path.stat().st_size
                    cpu_before = thread_cpu(proc.pid) if args.profile else {}
                    s = run_bench(args, f"{label}-{mode}", port, n, proc.pid, args.out, warmup=label not in warmed)
                    warmed.add(label)  # one untimed stream per server, before its first count
                    report(label, mode, n, s)
                    if args.profile:
                        cpu = thread_cpu(proc.pid)
                        print("        thread CPU s: " + ", ".join(
                            f"{k} {v - cpu_before.get(k, 0.0):.1f}" for k, v in sorted(
                                cpu.items(), key=lambda kv: cpu_before.get(kv[0], 0.0) - kv[1])
                            if v - cpu_before.get(k, 0.0) >= 0.05))
                        with log_path.open(errors="replace") as log_file:
                            log_file.seek(log_from)
                            for line in batch_profile(log_file.read()):
                                print("        " + line, flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
