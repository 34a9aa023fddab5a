"""Benchmark, run by hand: client-side latency of final results under realtime streaming.

    python bench/final_latency.py                      # starts the appliance itself
    python bench/final_latency.py --server 127.0.0.1:50051 --json out.json

Streams each recording at speaking pace in its own session, and reports the median and
p95 of (final received - moment the audio up to the final's end_sec had been sent).
In continue mode a mid-stream final cannot come before the server's vad.silence has
elapsed, so the figure to tune is the median minus that silence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ALSA_PROMPTS_DIR = Path("/usr/share/sounds/alsa")

if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

from clients.audio import load_pcm16, pcm16_duration_sec
from clients.cli_common import latency_summary
from clients.corpus import english_corpus
from clients.loadtest import find_audio
from clients.local_server import LocalAppliance
from clients.sdk import SttClient, SttError


def default_recordings() -> list[Path]:
    """English files of the shared corpus; the ALSA speaker-test prompts without one."""
    files = [rec.path for rec in english_corpus() if rec.path.is_file()]
    if files:
        return sorted(files)
    # Noise.wav is the one ALSA test file without speech.
    return sorted(p for p in ALSA_PROMPTS_DIR.glob("*.wav") if p.name != "Noise.wav")


def recordings_from(paths: list[str]) -> list[Path]:
    try:
        return find_audio(paths)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err


def bench_file(client: SttClient, path: Path, args: argparse.Namespace) -> dict:
    pcm16, sample_rate_hz = load_pcm16(path)
    session = client.create_session(vad_mode="continue", vad_silence_sec=args.vad_silence,
                                    language=args.language, decode_profile=args.decode_profile,
                                    attributes={"partial": "true"} if args.partials else None)
    start_sec = time.monotonic()
    finals = [r for r in client.stream_audio(session, pcm16, sample_rate_hz, chunk_ms=args.chunk_ms)
              if r.is_final]
    return {
        "file": path.name,
        "audio_sec": pcm16_duration_sec(pcm16, sample_rate_hz),
        "wall_sec": time.monotonic() - start_sec,
        "vad_silence_sec": session.vad_silence_sec,
        "final_latencies_sec": [r.latency_sec for r in finals],
        "text": " ".join(r.text.strip() for r in finals),
    }


def summarize(runs: list[dict]) -> dict:
    latencies_sec = [v for run in runs for v in run["final_latencies_sec"]]
    silences_sec = sorted({round(run["vad_silence_sec"], 4) for run in runs})
    figures = latency_summary(latencies_sec)
    median_sec = figures["final_latency_median_sec"]
    audio_sec = sum(run["audio_sec"] for run in runs)
    wall_sec = sum(run["wall_sec"] for run in runs)
    return {
        "files": len(runs),
        "finals": len(latencies_sec),
        **figures,
        # Sessions share the server's vad.silence unless --vad-silence overrides it.
        "vad_silence_sec": silences_sec[0] if len(silences_sec) == 1 else silences_sec,
        "median_minus_silence_sec": (median_sec - silences_sec[0]
                                     if median_sec is not None and len(silences_sec) == 1 else None),
        "audio_sec": audio_sec,
        "wall_sec": wall_sec,
        "realtime_factor": wall_sec / audio_sec if audio_sec > 0 else None,
    }


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="use this running server (host:port) instead of starting one")
    parser.add_argument("--audio", action="append", metavar="FILE_OR_DIR",
                        help="recording or folder to stream (repeatable; default: English shared corpus)")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "config" / "server.yaml",
                        help="server YAML when starting one (default: the repo's)")
    parser.add_argument("--model-config", type=Path, default=REPO_ROOT / "config" / "model.yaml",
                        help="model YAML when starting one (default: the repo's)")
    parser.add_argument("--startup-timeout-sec", type=float, default=60.0)
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument("--vad-silence", type=float, help="per-session override, seconds")
    parser.add_argument("--partials", action="store_true",
                        help="sessions with partials (a final may then reuse the partial decoded as silence began)")
    parser.add_argument("--language", default="", help="force a language (default: detect)")
    parser.add_argument("--decode-profile", default="", help="default: the server's")
    parser.add_argument("--json", metavar="OUT", help="write the figures (and per-file runs) here")
    args = parser.parse_args(argv)

    recordings = recordings_from(args.audio) if args.audio else default_recordings()
    if not recordings:
        raise SystemExit("error: no recordings found; pass --audio FILE_OR_DIR")

    # Resolved here: the server runs with the repo root as its working directory.
    appliance = None if args.server else LocalAppliance(
        "--config", str(args.config.resolve()), "--model-config", str(args.model_config.resolve()),
        startup_timeout_sec=args.startup_timeout_sec)
    try:
        address = args.server or appliance.start().address
        runs = []
        with SttClient(address) as client:
            for path in recordings:
                run = bench_file(client, path, args)
                runs.append(run)
                latencies = ", ".join(f"{v:.3f}" for v in run["final_latencies_sec"]) or "-"
                print(f"{path.name}: {run['audio_sec']:.2f} s audio, final latency [{latencies}] s: "
                      f"{run['text']}", flush=True)
    except SttError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if appliance is not None:
            appliance.__exit__(None, None, None)

    figures = summarize(runs)
    silence = figures["vad_silence_sec"]
    rtf = figures["realtime_factor"]
    print(f"\nfinals: {figures['finals']} from {figures['files']} files")
    print(f"final latency (client): median {_sec(figures['final_latency_median_sec'])}, "
          f"p95 {_sec(figures['final_latency_p95_sec'])}")
    print(f"vad silence: {silence if isinstance(silence, list) else _sec(silence)}; "
          f"median minus silence {_sec(figures['median_minus_silence_sec'])}")
    print(f"realtime factor: {'n/a' if rtf is None else f'{rtf:.3f}'} "
          f"({figures['wall_sec']:.1f} s wall for {figures['audio_sec']:.1f} s audio)")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": figures, "runs": runs}, indent=2) + "\n",
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
