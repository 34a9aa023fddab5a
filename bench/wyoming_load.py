"""Wyoming load: N concurrent Home-Assistant-style clients against the appliance's Wyoming port.

    python bench/wyoming_load.py                          # starts the appliance; 1,2,4,8,16 clients, 30 s each
    python bench/wyoming_load.py --counts 1,4,16 --duration 60 --json wyoming.json
    python bench/wyoming_load.py --port 10300             # an appliance already serving Wyoming there
    python bench/wyoming_load.py --port 10400 --pid 1234  # any Wyoming ASR server (e.g. wyoming-faster-whisper)

Each client does what Home Assistant's Wyoming STT provider does for one voice command, again and
again for --duration seconds: transcribe → audio-start → 100 ms audio-chunks at speaking pace →
audio-stop → waits for `transcript`. The figure that matters to a person is the wait after
audio-stop (p50/p95 over every request at that count); a wrong or missing transcript counts as an
error. The audio is the shipped speech set (hwtests/speech). Server CPU and RSS come from /proc of
the server's pid (the appliance this script started, or --pid). Prints one row per count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

import soundfile as sf
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error

from clients.cli_common import percentile
from clients.corpus import wer
from clients.loadtest.procstats import ProcSampler
from clients.local_server import LocalAppliance
from hwtests.speech import speech_set

CHUNK_SEC = 0.1
WER_LIMIT = 0.5  # a transcript further off than this is counted as an error, not a latency


@dataclass
class Step:
    clients: int
    requests: int
    errors: int
    wait_p50_sec: float | None
    wait_p95_sec: float | None
    wait_max_sec: float | None
    cpu_mean_pct: float | None
    rss_peak_mb: float | None


@dataclass(frozen=True)
class Clip:
    pcm16: bytes
    rate_hz: int
    reference: str


def load_clips() -> list[Clip]:
    clips = []
    for rec in speech_set():
        audio, rate_hz = sf.read(str(rec.path), dtype="int16", always_2d=True)
        clips.append(Clip(audio[:, 0].tobytes(), rate_hz, rec.reference))
    return clips


async def one_request(port: int, clip: Clip) -> tuple[float | None, bool]:
    """(seconds from audio-stop to transcript, transcript acceptable)."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=clip.rate_hz, width=2, channels=1).event())
        step = int(CHUNK_SEC * clip.rate_hz) * 2
        started = time.monotonic()
        for n, offset in enumerate(range(0, len(clip.pcm16), step)):
            await client.write_event(AudioChunk(rate=clip.rate_hz, width=2, channels=1,
                                                audio=clip.pcm16[offset:offset + step]).event())
            await asyncio.sleep(max(0.0, started + (n + 1) * CHUNK_SEC - time.monotonic()))  # speaking pace
        await client.write_event(AudioStop().event())
        stopped = time.monotonic()
        while (event := await asyncio.wait_for(client.read_event(), 120)) is not None:
            if Transcript.is_type(event.type):
                text = Transcript.from_event(event).text
                return time.monotonic() - stopped, wer(clip.reference, text) <= WER_LIMIT
            if Error.is_type(event.type):
                return None, False
        return None, False
    finally:
        with contextlib.suppress(ConnectionError):
            await client.disconnect()


async def run_step(port: int, clients: int, duration_sec: float, clips: list[Clip]) -> tuple[list[float], int]:
    waits: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration_sec

    async def client_loop(index: int) -> None:
        nonlocal errors
        n = index  # clients start on different clips
        while time.monotonic() < deadline:
            try:
                wait, ok = await one_request(port, clips[n % len(clips)])
            except (ConnectionError, TimeoutError, OSError):
                wait, ok = None, False
            if wait is not None and ok:
                waits.append(wait)
            else:
                errors += 1
            n += 1

    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return waits, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,2,4,8,16", help="concurrent clients per step")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each step keeps starting requests")
    parser.add_argument("--port", type=int, help="an appliance already serving Wyoming on 127.0.0.1:PORT")
    parser.add_argument("--pid", type=int, help="with --port: the server's pid, for its CPU and RSS")
    parser.add_argument("--json", type=Path, help="write the steps here")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    clips = load_clips()
    appliance = None
    if args.port is None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        appliance = LocalAppliance("--wyoming-port", str(port), f"--max-sessions={max(counts) + 4}",
                                   env={"STT_WYOMING_HOST": "127.0.0.1", "STT_SERVER_MAX_SESSIONS_PER_IP": "0"})
        appliance.start()
    else:
        port = args.port
    pid = appliance.pid if appliance else args.pid
    steps = []
    try:
        print("clients  requests  errors  wait p50 s  wait p95 s  wait max s  server CPU %  RSS peak MB")
        for count in counts:
            sampler = ProcSampler(pid).start() if pid else None
            waits, errors = asyncio.run(run_step(port, count, args.duration, clips))
            stats = sampler.stop() if sampler else None
            step = Step(count, len(waits) + errors, errors, percentile(waits, 0.5), percentile(waits, 0.95),
                        max(waits) if waits else None, stats.cpu_mean_pct if stats else None,
                        stats.rss_peak_mb if stats else None)
            steps.append(step)
            print(f"{count:7d}  {step.requests:8d}  {errors:6d}  {fmt(step.wait_p50_sec):>10}  "
                  f"{fmt(step.wait_p95_sec):>10}  {fmt(step.wait_max_sec):>10}  {fmt(step.cpu_mean_pct, 0):>12}  "
                  f"{fmt(step.rss_peak_mb, 0):>11}", flush=True)
            time.sleep(2)
    finally:
        if appliance:
            appliance.__exit__(None, None, None)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in steps], indent=2) + "\n")
    return 0


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
