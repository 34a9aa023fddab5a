"""Throughput of the OpenAI-compatible upload API on a batch of files, against the gRPC batch path
(upload_mode=batch, one session per file) on the same files, same appliance, same run.

    python bench/openai_throughput.py                         # starts the appliance; 1, 2 and 4 workers
    python bench/openai_throughput.py --workers 1,2 --rounds 2 --json openai.json

The batch is ../shared/audio (the English corpus) when it is beside the checkout, else the shipped
speech set (hwtests/speech). Each step sends every file --rounds times, spread over N workers that
each upload one file at a time, first through /v1/audio/transcriptions with the `openai` client,
then through gRPC. Per path it prints the audio seconds transcribed per wall second (x real time),
request latency p50/p95, the corpus WER, errors, and the server's CPU and RSS. The ratio column is
OpenAI throughput / gRPC throughput: what the HTTP front door costs over the native one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

import soundfile as sf
from openai import OpenAI

from clients.cli_common import percentile
from clients.corpus import SHARED_AUDIO, english_corpus, word_errors
from clients.loadtest.procstats import ProcSampler
from clients.local_server import LocalAppliance
from clients.sdk import SttClient
from hwtests.speech import speech_set


@dataclass(frozen=True)
class File:
    name: str
    data: bytes  # the file as uploaded
    pcm16: bytes  # its samples, for the gRPC path
    rate_hz: int
    duration_sec: float
    reference: str


@dataclass
class Step:
    path: str
    workers: int
    requests: int
    errors: int
    audio_sec: float
    wall_sec: float
    x_realtime: float
    latency_p50_sec: float | None
    latency_p95_sec: float | None
    wer: float | None
    cpu_mean_pct: float | None
    rss_peak_mb: float | None


def load_files() -> tuple[list[File], str]:
    recordings = english_corpus() if (SHARED_AUDIO / "manifest.tsv").is_file() else []
    source = str(SHARED_AUDIO) if recordings else "hwtests/speech"
    files = []
    for rec in recordings or speech_set():
        audio, rate_hz = sf.read(str(rec.path), dtype="int16", always_2d=True)
        files.append(File(rec.path.name, rec.path.read_bytes(), audio[:, 0].tobytes(), rate_hz,
                          len(audio) / rate_hz, rec.reference))
    return files, source


def via_openai(client: OpenAI, file: File) -> str:
    return client.audio.transcriptions.create(model="whisper-1", file=(file.name, file.data), language="en").text


def via_grpc(address: str, file: File) -> str:
    with SttClient(address) as client:
        session = client.create_session(language="en", attributes={"upload_mode": "batch"})
        results = client.stream_audio(session, file.pcm16, file.rate_hz, chunk_ms=60_000, realtime=False)
        return " ".join(r.text.strip() for r in results if r.is_final and r.text.strip())


def run_step(path: str, send, files: list[File], workers: int, rounds: int, pid: int) -> Step:
    jobs = [f for _ in range(rounds) for f in files]
    latencies: list[float] = []
    errors, edits, words = 0, 0, 0

    def one(file: File) -> tuple[File, float, str | None]:
        started = time.monotonic()
        try:
            text = send(file)
        except Exception as err:  # counted, and the run goes on
            print(f"  {path} {file.name}: {type(err).__name__}: {str(err)[:120]}", file=sys.stderr)
            text = None
        return file, time.monotonic() - started, text

    sampler = ProcSampler(pid).start()
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for file, latency, text in pool.map(one, jobs):
            if text is None:
                errors += 1
                continue
            latencies.append(latency)
            e, n = word_errors(file.reference, text)
            edits, words = edits + e, words + n
    wall = time.monotonic() - started
    stats = sampler.stop()
    audio_sec = sum(f.duration_sec for f in jobs)
    return Step(path, workers, len(jobs), errors, round(audio_sec, 1), round(wall, 2), round(audio_sec / wall, 2),
                percentile(latencies, 0.5), percentile(latencies, 0.95), round(edits / words, 4) if words else None,
                stats.cpu_mean_pct, stats.rss_peak_mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="concurrent uploaders per step")
    parser.add_argument("--rounds", type=int, default=1, help="times each step sends the whole batch")
    parser.add_argument("--json", type=Path, help="write the steps here")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",")]
    files, source = load_files()
    total = sum(f.duration_sec for f in files)
    print(f"{len(files)} files, {total:.1f} s of audio, from {source}; {args.rounds} round(s) per step")
    appliance = LocalAppliance(env={"STT_OPENAI_MAX_CONCURRENT_REQUESTS": str(max(counts)),
                                    "STT_HTTP_RATE_LIMIT_RPS": "0", "STT_SERVER_MAX_SESSIONS_PER_IP": "0"})
    appliance.start()
    client = OpenAI(base_url=appliance.openai_url, api_key="bench", max_retries=0, timeout=600)
    steps: list[Step] = []
    try:
        print("path    workers  requests  errors  x realtime  ratio  p50 s   p95 s   WER     CPU %  RSS MB")
        for count in counts:
            pair = []
            for path, send in (("openai", lambda f: via_openai(client, f)),
                               ("grpc", lambda f: via_grpc(appliance.address, f))):
                step = run_step(path, send, files, count, args.rounds, appliance.pid)
                pair.append(step)
                time.sleep(1)
            ratio = pair[0].x_realtime / pair[1].x_realtime if pair[1].x_realtime else float("nan")
            for step in pair:
                print(f"{step.path:7} {step.workers:7d}  {step.requests:8d}  {step.errors:6d}  "
                      f"{step.x_realtime:10.2f}  {ratio if step.path == 'openai' else 1.0:5.2f}  "
                      f"{fmt(step.latency_p50_sec)}  "
                      f"{fmt(step.latency_p95_sec)}  {fmt(step.wer, 4)}  {fmt(step.cpu_mean_pct, 0):>5}  "
                      f"{fmt(step.rss_peak_mb, 0):>6}", flush=True)
            steps.extend(pair)
    finally:
        appliance.__exit__(None, None, None)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in steps], indent=2) + "\n")
    return 0


def fmt(value: float | None, digits: int = 3) -> str:
    return "  n/a " if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
