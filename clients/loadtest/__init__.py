"""Load tester for the appliance: many concurrent realtime streams, measured from the client.

    python -m clients.loadtest --channels 8 --duration 60 --audio ../shared/audio --plot out.png

Modules: `runner` (channels, pacing, collection), `report` (figures, printing, JSON, plot),
`procstats` (server CPU and RSS from /proc). This module owns what the CLI and the benchmarks
(bench/sweep.py, bench/flood.py) share: their command-line options, the audio they send
(`find_audio`, `load_clips` -> `Clip`s at 16 kHz), turning options into a `LoadConfig`, and
`target_server()`, which starts a local appliance (or names a running one) and says which pid
to sample. docs/loadtest.md explains every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from clients.audio import float_to_pcm16, load_pcm16
from clients.corpus import english_corpus
from hwtests.speech import SPEECH_DIR

SAMPLE_RATE_HZ = 16_000
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}


class UsageError(Exception):
    """Something wrong with what was asked for: printed as `error: ...`, exit 2."""


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--server", metavar="HOST:PORT",
                       help="use this running server instead of starting one")
    group.add_argument("--server-pid", type=int, metavar="PID",
                       help="with --server: sample this process's CPU and RSS (else n/a)")
    group.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                       help="extra argument for the server this starts, repeatable; write flags as "
                            "--server-arg=--max-sessions=8")
    group.add_argument("--server-env", action="append", default=[], type=key_value, metavar="K=V",
                       help="environment for the server this starts, repeatable "
                            "(e.g. STT_SERVER_MAX_SESSIONS=8)")
    group.add_argument("--startup-timeout-sec", type=float, default=90.0)


def add_load_arguments(parser: argparse.ArgumentParser, *, duration_sec: float = 30.0,
                       with_channels: bool = True) -> None:
    group = parser.add_argument_group("load")
    if with_channels:
        group.add_argument("--channels", type=int, default=4, help="concurrent streams (default: 4)")
    group.add_argument("--duration", type=float, default=duration_sec,
                       help=f"seconds to keep starting files; each channel then finishes its file "
                            f"(default: {duration_sec:g})")
    group.add_argument("--audio", action="append", metavar="FILE_OR_DIR",
                       help="recording or folder, repeatable (default: English files of "
                            "../shared/audio, else the speech shipped in hwtests/speech)")
    group.add_argument("--max-file-sec", type=float, default=40.0,
                       help="skip recordings longer than this, seconds (default: 40; 0: none)")
    group.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                       help="pace audio at speaking rate (default); --no-realtime: each file as fast "
                            "as the stream takes it, in its own session, one after another")
    group.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="re-dial and resume a stream whose connection dropped (default); "
                            "--no-resume: count it as a stream error")
    group.add_argument("--partials", action="store_true", help="ask for partial results (partial=true)")
    group.add_argument("--chunk-ms", type=float, default=100.0, help="audio per chunk (default: 100)")
    group.add_argument("--ramp-sec", type=float, default=2.0,
                       help="spread session starts over this many seconds (default: 2)")
    group.add_argument("--gap-sec", type=float, default=1.0,
                       help="silence sent after each file in realtime mode (default: 1)")
    group.add_argument("--vad-silence", type=float, help="per-session vad silence, seconds")
    group.add_argument("--decode-profile", default="", help="decode profile (default: the server's)")
    group.add_argument("--language", default="", help="force a language (default: the server's)")
    group.add_argument("--attr", action="append", default=[], type=key_value, metavar="K=V",
                       help="extra session attribute, repeatable")


@dataclass(frozen=True)
class Clip:
    """One recording as the load tester sends it: mono pcm16 at 16 kHz."""

    name: str
    pcm16: bytes

    @property
    def duration_sec(self) -> float:
        return len(self.pcm16) / 2 / SAMPLE_RATE_HZ


def find_audio(paths: Sequence[str | Path]) -> list[Path]:
    """Files named, and the audio files directly inside folders named (sorted); ValueError if missing."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"no such audio file or folder: {path}")
    return files


def load_clips(paths: Sequence[Path], max_file_sec: float | None = None) -> tuple[list[Clip], list[str]]:
    """(clips, names skipped for being longer than max_file_sec). Other rates are resampled to
    16 kHz once here, so one stream can carry files recorded at different rates."""
    clips, skipped = [], []
    for path in paths:
        pcm16, rate_hz = load_pcm16(path)
        if rate_hz != SAMPLE_RATE_HZ:
            import numpy as np
            import soxr

            samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
            pcm16 = float_to_pcm16(soxr.resample(samples, rate_hz, SAMPLE_RATE_HZ))
        clip = Clip(path.name, pcm16)
        if max_file_sec and clip.duration_sec > max_file_sec:
            skipped.append(path.name)
        elif clip.pcm16:
            clips.append(clip)
    return clips, skipped


def default_audio() -> list[Path]:
    """English files of the shared corpus; without it the speech the package ships (hwtests/speech),
    so a fresh box without ../shared has real sentences to send."""
    files = sorted(rec.path for rec in english_corpus() if rec.path.is_file())
    return files or sorted(SPEECH_DIR.glob("*.wav"))


def load_config(args: argparse.Namespace, channels: int | None = None):
    """(LoadConfig, names of files skipped as too long) from parsed options; UsageError for
    anything the run cannot start with. `channels` overrides --channels (the sweep sets it)."""
    from clients.loadtest.runner import LoadConfig

    channels = channels if channels is not None else args.channels
    if channels < 1:
        raise UsageError(f"--channels must be >= 1, got {channels}")
    if not (args.duration > 0 and args.chunk_ms > 0):
        raise UsageError("--duration and --chunk-ms must be > 0")
    if args.ramp_sec < 0 or args.gap_sec < 0:
        raise UsageError("--ramp-sec and --gap-sec must be >= 0")
    try:
        paths = find_audio(args.audio) if args.audio else default_audio()
        clips, skipped = load_clips(paths, args.max_file_sec or None)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    if not clips:
        raise UsageError("no usable audio: pass --audio FILE_OR_DIR"
                         + (f" (skipped as too long: {', '.join(skipped)})" if skipped else ""))
    return LoadConfig(channels=channels, duration_sec=args.duration, clips=tuple(clips),
                      realtime=args.realtime, resume=args.resume, partials=args.partials, chunk_ms=args.chunk_ms,
                      ramp_sec=args.ramp_sec, gap_sec=args.gap_sec, vad_silence_sec=args.vad_silence,
                      decode_profile=args.decode_profile, language=args.language,
                      attributes=dict(args.attr)), skipped


@dataclass(frozen=True)
class Target:
    address: str
    pid: int | None  # None: CPU and RSS are not sampled
    memory_budget_mb: float | None = None  # when the server announces one in its ready file
    log: object = None  # callable returning the started server's log, when this started it


@contextlib.contextmanager
def target_server(args: argparse.Namespace) -> Iterator[Target]:
    """The server to load: --server as given, or a LocalAppliance started (and stopped) here.
    RuntimeError/TimeoutError when the local server does not come up."""
    if args.server:
        yield Target(args.server, args.server_pid)
        return
    from clients.local_server import LocalAppliance

    # Every simulated kiosk connects from this one host: lift the per-IP session cap (default 16)
    # unless --server-env sets it.
    env = {"STT_SERVER_MAX_SESSIONS_PER_IP": "0", **dict(args.server_env)}
    with LocalAppliance(*args.server_arg, env=env,
                        startup_timeout_sec=args.startup_timeout_sec) as appliance:
        yield Target(appliance.address, appliance.pid, _announced_budget_mb(appliance.ready_file),
                     appliance.log)


def _announced_budget_mb(ready_file: Path) -> float | None:
    try:
        ready = json.loads(ready_file.read_text())
    except (OSError, ValueError):
        return None
    if ready.get("memory_budget_bytes"):
        return float(ready["memory_budget_bytes"]) / (1024 * 1024)
    return float(ready["memory_budget_mb"]) if ready.get("memory_budget_mb") else None
