"""Decode bomb: what per-session decode options can cost the server, and the other streams.

    python bench/decode_bomb.py                          # starts the appliance, default bomb
    python bench/decode_bomb.py --repeat 1 --honest 4 --duration 20 --json bomb.json
    python bench/decode_bomb.py --bomb-attr decode.beam_size=5 --bomb-attr decode.temperature=0.0,0.5,1.0
    python bench/decode_bomb.py --server 127.0.0.1:50051 --server-pid 1234

A client may set decode options per session as CreateSession attributes `decode.<option>=<value>`
(appliance/decode_options.py). A "decode bomb" asks for the most expensive decode it can: by
default a 40-entry temperature ladder from 0.0 to 1.0 (`decode.temperature`), an impossible
`decode.log_prob_threshold=0` (every temperature "fails", so faster-whisper walks the whole ladder
on every decode) and `decode.best_of=5` (5 candidates sampled per temperature above 0).
`--bomb-attr K=V` (repeatable) replaces that set.

Which bomb is used. CreateSession is tried with the bomb attributes. When the server refuses them
with a coded error (ERR1010: a cap on a decode option), the message is printed and the
`--capped-bomb-attr` set is tried instead (default: a 6-entry ladder 0.0..1.0,
`decode.log_prob_threshold=0`, `decode.best_of=5`). When that is refused too the bomb counts as
fully refused: the cost ratio is n/a, and the collateral run's bomb clients keep asking for the
original bomb (each refusal is counted). Printed: "bomb: accepted", "bomb refused ...; capped bomb
accepted" or "bomb fully refused".

Part 1, cost ratio. The same recording (--audio; default: the longest English file of at most 15 s
in ../shared/audio, else /usr/share/sounds/alsa/Front_Center.wav) is streamed as fast as the stream
takes it, once in a plain session (no attributes) and once in a bomb session, --repeat times
(default 3; plain and bomb alternate, after one untimed plain warm-up stream). Per repeat:

* plain / bomb decode: the sum of `decode_latency_sec` over the stream's finals, i.e. the server's
  decode seconds the recording cost (finals only: no partials are asked for);
* wall: CreateSession to the end of the stream, seconds, as the client saw it;
* ratio: bomb decode / plain decode.
Summary: the medians of the plain and bomb decode sums, "bomb/plain" = the median of the per-repeat
ratios, and "wall" = the median of the per-repeat wall ratios. A bomb stream that ends with an error
(e.g. ERR1009 when a decode budget cuts the decode) is counted by code under "bomb streams ended by
an error"; its decode sum then holds only the finals that came back (the wall ratio still says how
long the stream held the server).

Part 2, collateral. --honest K (default 8) honest streams run for --duration s (default 40) at
speaking pace, finals only, through the load tester's runner (clients/loadtest; each channel holds
one `vad_mode=continue` session and streams the load tester's default audio, files up to
--max-file-sec, back to back): once alone, then again with --bombs N (default 2) bomb clients
streaming the bomb recording at the same time (as fast as possible, one session per file, the next
file once the previous stream has ended; --bomb-realtime paces them at speaking rate instead).
Per run, for the honest streams:

* final latency p50/p95: `TimedResult.latency_sec` of their finals (final received minus the moment
  the audio up to the final's end had been sent; includes the vad.silence endpoint wait);
* finals: finals received, and lost (utterances a stream error cut off, as the load tester counts);
* errors: refusals and stream failures by code (ERR10xx, else the gRPC status), e.g. ERR1009 when a
  final waited past server.decode_queue_timeout_sec for a decode slot;
* server CPU: mean over the run, % of one core (n/a with --server unless --server-pid).
For the bombs of the second run: streams opened, finals, their decode seconds, refusals at
CreateSession by code, and bomb streams that were accepted but ended with an error, by code.
"honest p95 with bombs / alone" is the ratio of the two p95 figures (n/a when either is missing); it
covers only the finals that came back, so read it with the finals counts printed beside it.

--json OUT writes every figure above (settings, bomb resolution, each repeat, both collateral runs
with the load tester's full figures). The appliance is started here through the load tester's
`target_server` (per-IP session cap lifted) unless --server HOST:PORT is given; --server-arg and
--server-env pass through to it. Exit 0 when the benchmark ran (whatever it measured), 1 when the
server did not start or was unreachable, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

from clients.corpus import english_corpus
from clients.loadtest import (
    SAMPLE_RATE_HZ,
    Clip,
    UsageError,
    add_target_arguments,
    default_audio,
    find_audio,
    key_value,
    load_clips,
    target_server,
)
from clients.loadtest.report import ProgressLine, compute_figures
from clients.loadtest.runner import LoadConfig, LoadResult, error_code, run_load
from clients.sdk import SttClient, SttError

ALSA_FALLBACK = Path("/usr/share/sounds/alsa/Front_Center.wav")
DEFAULT_MAX_COST_FILE_SEC = 15.0
LADDER_ENTRIES = 40
DEFAULT_BOMB = {
    "decode.temperature": ",".join(str(round(i / (LADDER_ENTRIES - 1), 4)) for i in range(LADDER_ENTRIES)),
    "decode.log_prob_threshold": "0",
    "decode.best_of": "5",
}
DEFAULT_CAPPED_BOMB = {
    "decode.temperature": "0.0,0.2,0.4,0.6,0.8,1.0",
    "decode.log_prob_threshold": "0",
    "decode.best_of": "5",
}
PAUSE_BETWEEN_RUNS_SEC = 2.0  # lets the server settle (sessions end, queues drain)


# --- audio and attributes -----------------------------------------------------------------

def default_cost_audio() -> Path:
    """The longest English corpus file of at most 15 s; the ALSA prompt without the corpus."""
    recordings = [r for r in english_corpus() if r.path.is_file() and r.duration_sec <= DEFAULT_MAX_COST_FILE_SEC]
    if recordings:
        return max(recordings, key=lambda r: (r.duration_sec, r.path.name)).path
    return ALSA_FALLBACK


def show_attributes(attributes: dict[str, str]) -> str:
    """K=V, with a long comma list shown as its length and ends."""
    parts = []
    for key, value in attributes.items():
        items = value.split(",")
        shown = f"<{len(items)} entries {items[0]}..{items[-1]}>" if len(items) > 6 else value
        parts.append(f"{key}={shown}")
    return ", ".join(parts) or "(none)"


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} x{n}" for code, n in sorted(counts.items())) or "none"


def _sec(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


# --- which bomb ---------------------------------------------------------------------------

def resolve_bomb(client: SttClient, bomb: dict[str, str], capped: dict[str, str]) -> dict[str, Any]:
    """Try CreateSession with the bomb, then the capped bomb. `used`: "bomb", "capped" or None
    (fully refused); `attributes` what the benchmark's bombs will send; `refusals` what was refused."""
    refusals = []
    for label, attributes in (("bomb", bomb), ("capped", capped)):
        try:
            session = client.create_session(vad_mode="continue", attributes=attributes)
        except SttError as err:
            if not err.code:  # not a refusal of the options: the server is unreachable or broken
                raise
            refusals.append({"which": label, "code": err.code, "message": err.message})
            print(f"{'bomb' if label == 'bomb' else 'capped bomb'} refused at CreateSession: {err}", flush=True)
            continue
        try:  # end the probe session at once: a stream without audio
            for _ in client.send_chunks(session, [], SAMPLE_RATE_HZ, realtime=False):
                pass
        except SttError:
            pass
        return {"used": label, "attributes": attributes, "refusals": refusals}
    return {"used": None, "attributes": bomb, "refusals": refusals}


# --- part 1: cost ratio -------------------------------------------------------------------

def stream_once(client: SttClient, clip: Clip, attributes: dict[str, str], chunk_ms: float) -> dict[str, Any]:
    """One session, the clip as fast as possible; decode seconds of its finals, wall, error code."""
    started = time.monotonic()
    decode_sec, finals, texts, code, message = 0.0, 0, [], None, None
    try:
        session = client.create_session(vad_mode="continue", attributes=attributes)
        for result in client.stream_audio(session, clip.pcm16, SAMPLE_RATE_HZ, chunk_ms=chunk_ms, realtime=False):
            if result.is_final:
                decode_sec += result.decode_latency_sec
                finals += 1
                texts.append(result.text.strip())
    except SttError as err:
        code, message = error_code(err), err.message
    return {"decode_sec": decode_sec, "finals": finals, "wall_sec": time.monotonic() - started,
            "error": code, "error_message": message, "text": " ".join(t for t in texts if t)}


def cost_ratio(client: SttClient, clip: Clip, bomb: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"audio": clip.name, "audio_sec": clip.duration_sec, "repeats": [],
                           "plain_decode_sec_median": None, "bomb_decode_sec_median": None,
                           "ratio_median": None, "wall_ratio_median": None, "bomb_stream_errors": {}}
    print(f"-- cost ratio: {clip.name} ({clip.duration_sec:.2f} s), as fast as possible, "
          f"{args.repeat} repeat(s)", flush=True)
    if bomb["used"] is None:
        print("cost ratio: n/a (the bomb was fully refused at CreateSession)", flush=True)
        return out
    warmup = stream_once(client, clip, {}, args.chunk_ms)
    if warmup["error"]:
        print(f"warm-up plain stream failed: {warmup['error']}: {warmup['error_message']}", flush=True)
    errors: Counter[str] = Counter()
    for index in range(args.repeat):
        plain = stream_once(client, clip, {}, args.chunk_ms)
        loaded = stream_once(client, clip, bomb["attributes"], args.chunk_ms)
        if loaded["error"]:
            errors[loaded["error"]] += 1
        ratio = _ratio(loaded["decode_sec"], plain["decode_sec"])
        wall_ratio = _ratio(loaded["wall_sec"], plain["wall_sec"])
        out["repeats"].append({"plain": plain, "bomb": loaded, "ratio": ratio, "wall_ratio": wall_ratio})
        notes = "".join(f"; {name} stream ended with {run['error']}: {run['error_message']}"
                        for name, run in (("plain", plain), ("bomb", loaded)) if run["error"])
        print(f"repeat {index + 1}: plain {plain['decode_sec']:.3f} s decode ({plain['finals']} finals, "
              f"{plain['wall_sec']:.1f} s wall); bomb {loaded['decode_sec']:.3f} s decode ({loaded['finals']} "
              f"finals, {loaded['wall_sec']:.1f} s wall); ratio {_num(ratio)}{notes}", flush=True)
    repeats = out["repeats"]
    out.update(
        plain_decode_sec_median=_median([r["plain"]["decode_sec"] for r in repeats]),
        bomb_decode_sec_median=_median([r["bomb"]["decode_sec"] for r in repeats]),
        ratio_median=_median([r["ratio"] for r in repeats]),
        wall_ratio_median=_median([r["wall_ratio"] for r in repeats]),
        bomb_stream_errors=dict(sorted(errors.items())),
        plain_text=repeats[0]["plain"]["text"] if repeats else "",
        bomb_text=repeats[0]["bomb"]["text"] if repeats else "",
    )
    print(f"cost ratio (median of {len(repeats)}): plain {_sec(out['plain_decode_sec_median'])}, bomb "
          f"{_sec(out['bomb_decode_sec_median'])} decode per stream; bomb/plain {_num(out['ratio_median'])} "
          f"(wall {_num(out['wall_ratio_median'])})", flush=True)
    print(f"bomb streams ended by an error: {format_counts(out['bomb_stream_errors'])}", flush=True)
    return out


# --- part 2: collateral -------------------------------------------------------------------

def honest_config(args: argparse.Namespace, clips: tuple[Clip, ...]) -> LoadConfig:
    return LoadConfig(channels=args.honest, duration_sec=args.duration, clips=clips, realtime=True,
                      partials=False, chunk_ms=args.chunk_ms, ramp_sec=args.ramp_sec)


def bomb_config(args: argparse.Namespace, clip: Clip, attributes: dict[str, str]) -> LoadConfig:
    return LoadConfig(channels=args.bombs, duration_sec=args.duration, clips=(clip,),
                      realtime=args.bomb_realtime, partials=False, chunk_ms=args.chunk_ms,
                      ramp_sec=args.ramp_sec, attributes=dict(attributes))


def honest_figures(result: LoadResult) -> dict[str, Any]:
    return compute_figures(result)


def bomb_figures(result: LoadResult) -> dict[str, Any]:
    figures = compute_figures(result)
    figures["refused_at_create"] = dict(sorted(Counter(e.code for e in result.errors if e.where == "create").items()))
    figures["streams_ended_by_error"] = dict(sorted(Counter(e.code for e in result.errors
                                                            if e.where == "stream").items()))
    return figures


def _run_into(out: list[LoadResult], config: LoadConfig, address: str) -> None:
    out.append(run_load(config, address))


def run_collateral(target, clips: tuple[Clip, ...], bomb_clip: Clip, bomb: dict[str, Any],
                   args: argparse.Namespace) -> dict[str, Any]:
    pacing = "at speaking pace" if args.bomb_realtime else "as fast as possible, one stream after another"
    print(f"-- collateral: {args.honest} honest realtime streams ({len(clips)} files), {args.duration:g} s, "
          f"alone and with {args.bombs} bomb(s) ({bomb_clip.name}, {pacing})", flush=True)
    runs: dict[str, Any] = {}
    for name in ("alone", "with_bombs"):
        bomb_result: list[LoadResult] = []
        bomb_thread = None
        if name == "with_bombs":
            time.sleep(PAUSE_BETWEEN_RUNS_SEC)
            if args.bombs > 0:
                config = bomb_config(args, bomb_clip, bomb["attributes"])
                bomb_thread = threading.Thread(target=_run_into, args=(bomb_result, config, target.address),
                                               name="decode-bombs", daemon=True)
                bomb_thread.start()
        progress = None if args.quiet else ProgressLine(sys.stderr, label=f"{name} ")
        try:
            result = run_load(honest_config(args, clips), target.address, target.pid, progress)
        finally:
            if progress:
                progress.close()
        if bomb_thread is not None:
            bomb_thread.join()
        runs[name] = {"honest": honest_figures(result)}
        if bomb_result:
            runs[name]["bombs"] = bomb_figures(bomb_result[0])
        print_run(name, runs[name])
    p95_alone = runs["alone"]["honest"]["final_latency_p95_sec"]
    p95_bombs = runs["with_bombs"]["honest"]["final_latency_p95_sec"]
    runs["p95_ratio"] = _ratio(p95_bombs, p95_alone)
    finals_alone, finals_bombs = runs["alone"]["honest"]["finals"], runs["with_bombs"]["honest"]["finals"]
    print(f"honest p95 with bombs / alone: {_num(runs['p95_ratio'])} (over the finals received: "
          f"{finals_bombs} with bombs, {finals_alone} alone)", flush=True)
    return runs


def print_run(name: str, run: dict[str, Any]) -> None:
    f = run["honest"]
    server = f["server"] or {}
    cpu = server.get("cpu_mean_pct") if server.get("samples") else None
    label = "alone:" if name == "alone" else "with bombs:"
    print(f"{label:<12} honest final latency p50 {_sec(f['final_latency_p50_sec'])}, p95 "
          f"{_sec(f['final_latency_p95_sec'])}; finals {f['finals']} (lost {f['finals_lost']}); errors "
          f"{format_counts(f['errors'])}; server CPU {_num(cpu, '.0f')}%", flush=True)
    b = run.get("bombs")
    if b:
        print(f"{'bombs:':<12} {b['streams']} streams, {b['finals']} finals, {b['decode_sec']:.1f} s decode; "
              f"refused at CreateSession: {format_counts(b['refused_at_create'])}; streams ended by an error: "
              f"{format_counts(b['streams_ended_by_error'])}", flush=True)


# --- main ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_arguments(parser)
    parser.add_argument("--audio", type=Path,
                        help="recording for the cost ratio and the bombs (default: the longest English "
                             "file of at most 15 s in ../shared/audio, else the ALSA Front_Center prompt)")
    parser.add_argument("--honest-audio", action="append", metavar="FILE_OR_DIR",
                        help="recordings for the honest streams, repeatable (default: the load tester's)")
    parser.add_argument("--max-file-sec", type=float, default=15.0,
                        help="honest recordings longer than this are skipped, s (default: 15; 0: none)")
    parser.add_argument("--repeat", type=int, default=3, help="cost-ratio repeats (default: 3)")
    parser.add_argument("--honest", type=int, default=8, help="honest realtime streams (default: 8)")
    parser.add_argument("--bombs", type=int, default=2, help="bomb clients in the collateral run (default: 2)")
    parser.add_argument("--duration", type=float, default=40.0, help="each collateral run, s (default: 40)")
    parser.add_argument("--bomb-realtime", action="store_true",
                        help="bombs stream at speaking pace (default: as fast as possible)")
    parser.add_argument("--bomb-attr", action="append", type=key_value, metavar="K=V",
                        help="bomb session attribute, repeatable; replaces the default bomb "
                             f"({show_attributes(DEFAULT_BOMB)})")
    parser.add_argument("--capped-bomb-attr", action="append", type=key_value, metavar="K=V",
                        help="attributes tried when the bomb is refused, repeatable "
                             f"(default: {show_attributes(DEFAULT_CAPPED_BOMB)})")
    parser.add_argument("--skip-cost", action="store_true", help="skip part 1 (cost ratio)")
    parser.add_argument("--skip-collateral", action="store_true", help="skip part 2 (collateral)")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per chunk (default: 100)")
    parser.add_argument("--ramp-sec", type=float, default=2.0, help="spread session starts (default: 2)")
    parser.add_argument("--json", metavar="OUT", help="write every figure here")
    parser.add_argument("--quiet", action="store_true", help="no progress line during collateral runs")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.honest < 1 or args.bombs < 0:
        parser.error("--repeat and --honest must be >= 1, --bombs >= 0")
    if not (args.duration > 0 and args.chunk_ms > 0) or args.ramp_sec < 0:
        parser.error("--duration and --chunk-ms must be > 0, --ramp-sec >= 0")
    return args


def load_audio(args: argparse.Namespace) -> tuple[Clip, tuple[Clip, ...]]:
    bomb_path = args.audio or default_cost_audio()
    if not bomb_path.is_file():
        raise UsageError(f"no such audio file: {bomb_path}")
    bomb_clips, _ = load_clips([bomb_path])
    if not bomb_clips:
        raise UsageError(f"no audio in {bomb_path}")
    try:
        honest_paths = find_audio(args.honest_audio) if args.honest_audio else default_audio()
    except ValueError as err:
        raise UsageError(str(err)) from err
    honest_clips, skipped = load_clips(honest_paths, args.max_file_sec or None)
    if skipped:
        print(f"honest audio skipped (longer than --max-file-sec): {', '.join(skipped)}", file=sys.stderr)
    if not honest_clips:
        raise UsageError("no usable honest audio: pass --honest-audio FILE_OR_DIR")
    return bomb_clips[0], tuple(honest_clips)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bomb_attrs = dict(args.bomb_attr) if args.bomb_attr else dict(DEFAULT_BOMB)
    capped_attrs = dict(args.capped_bomb_attr) if args.capped_bomb_attr else dict(DEFAULT_CAPPED_BOMB)
    try:
        bomb_clip, honest_clips = load_audio(args)
    except (UsageError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "settings": {"audio": bomb_clip.name, "audio_sec": bomb_clip.duration_sec, "repeat": args.repeat,
                     "honest": args.honest, "bombs": args.bombs, "duration_sec": args.duration,
                     "bomb_realtime": args.bomb_realtime, "honest_files": [c.name for c in honest_clips],
                     "bomb_attributes": bomb_attrs, "capped_bomb_attributes": capped_attrs},
    }
    try:
        with target_server(args) as target:
            print(f"decode bomb benchmark: server {target.address}"
                  f"{'' if args.server else ' (started here)'}", flush=True)
            print(f"bomb attributes: {show_attributes(bomb_attrs)}", flush=True)
            with SttClient(target.address) as client:
                bomb = resolve_bomb(client, bomb_attrs, capped_attrs)
                if bomb["used"] == "bomb":
                    print("bomb: accepted at CreateSession", flush=True)
                elif bomb["used"] == "capped":
                    print(f"capped bomb accepted at CreateSession: {show_attributes(capped_attrs)}", flush=True)
                else:
                    print("bomb fully refused: both the bomb and the capped bomb were refused at CreateSession",
                          flush=True)
                report["bomb"] = {**bomb, "fully_refused": bomb["used"] is None}
                if not args.skip_cost:
                    report["cost_ratio"] = cost_ratio(client, bomb_clip, bomb, args)
            if not args.skip_collateral:
                if not args.skip_cost:
                    time.sleep(PAUSE_BETWEEN_RUNS_SEC)
                report["collateral"] = run_collateral(target, honest_clips, bomb_clip, bomb, args)
    except (RuntimeError, TimeoutError) as err:
        print(f"error: the server did not start: {err}", file=sys.stderr)
        return 1
    except SttError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
