"""Streaming WER against offline faster-whisper on the dev set (run by hand).

Streams every English recording of the dev set (both batches: ../shared/audio and ../shared/audio/more,
`clients/dev_set.py`) through a real appliance (all files at once, realtime pacing unless --fast),
transcribes each file offline with faster-whisper on the same model, and prints per-file WER for
both, then pooled WER per source: each batch, each corpus group within it, and the whole set.

    python bench/wer.py [--fast] [--profile realtime] [--vad-silence 0.5] [--batch first|more|all]
    python bench/wer.py --fast --noise pink --snr 5     # the same, with noise mixed into every file
    python bench/wer.py --fast --noise babble --snr 10 --json out.json   # hypotheses kept for diffing

--readings streams, instead of the files, each VCTK speaker's sentences joined in manifest order
into one reading, with the silences the recordings already have between them (4 readings of 6-10
sentences). The same noisy sentences as the files' run, so a sentence read alone and the same
sentence read after others compare; in noise the later ones are decoded with the earlier ones' text
as their prompt (appliance/streaming/prompt_context.py), as a reader's are.

--noise mixes noise made here into each recording at --snr dB (against the recording's own RMS)
before both paths hear it: white (Gaussian), pink (1/f, shaped in the frequency domain) or babble
(six other recordings of the dev set, summed at random offsets). Seeded, so runs compare. The
offline transcripts are cached by the audio's hash, profile, precision and model
(~/.cache/stt-appliance/wer-offline), so a rerun after a server change decodes only the stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.audio import load_pcm16
from clients.corpus import offline_transcribe, word_errors
from clients.dev_set import BATCHES, DevRecording, dev_set
from clients.local_server import LocalAppliance
from clients.noise import NOISES, noisy_copies
from clients.sdk import SttClient

OFFLINE_CACHE = Path.home() / ".cache" / "stt-appliance" / "wer-offline"


def stream_file(address: str, path: Path, realtime: bool, profile: str, vad_silence: float | None,
                partials: bool = False) -> list[tuple[float, float, str, float]]:
    """The file's finals: (start_sec, end_sec, text, confidence) each."""
    pcm16, rate_hz = load_pcm16(path)
    with SttClient(address) as client:
        session = client.create_session(decode_profile=profile, vad_silence_sec=vad_silence,
                                        attributes={"partial": "true"} if partials else None)
        return [(r.start_sec, r.end_sec, r.text, r.confidence)
                for r in client.stream_audio(session, pcm16, rate_hz, chunk_ms=100, realtime=realtime) if r.is_final]


def join_readings(chosen: list[tuple[DevRecording, Path]], out_dir: Path) -> list[tuple[DevRecording, Path]]:
    """Each VCTK speaker's single sentences (`sent_en_vctk_p225_003`), in order, as one reading."""
    by_speaker: dict[str, list[tuple[DevRecording, Path]]] = defaultdict(list)
    for item, path in chosen:
        if item.path.name.startswith("sent_") and item.group == "vctk":
            by_speaker[item.path.stem.split("_")[3]].append((item, path))
    readings = []
    for speaker, sentences in by_speaker.items():
        audio, rates = [], set()
        for _, path in sentences:
            pcm16, rate_hz = load_pcm16(path)
            audio.append(np.frombuffer(pcm16, dtype=np.int16))
            rates.add(rate_hz)
        [rate_hz] = rates
        joined = np.concatenate(audio)
        out = out_dir / f"reading_en_vctk_{speaker}.wav"
        soundfile.write(str(out), joined, rate_hz, subtype="PCM_16")
        first = sentences[0][0]
        reading = DevRecording(out, first.language, joined.size / rate_hz,
                               " ".join(item.reference for item, _ in sentences), batch=first.batch)
        readings.append((reading, out))
    return readings


def cached_offline(path: Path, profile: str, compute_type: str) -> str:
    """Offline faster-whisper on the whole file, from the cache when this audio was decoded before."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    cached = OFFLINE_CACHE / f"{digest}.{profile}.{compute_type}.tiny.en.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    text = offline_transcribe(path, profile=profile, compute_type=compute_type)
    OFFLINE_CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(text, encoding="utf-8")
    return text


def source_rows(rows: list[dict]) -> list[tuple[str, int, int, int, int]]:
    """(source, files, words, streamed errors, offline errors): each batch, its groups, then all."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        for key in (row["batch"], f"{row['batch']}/{row['group']}", "all"):
            t = totals[key]
            t[0] += 1
            t[1] += row["words"]
            t[2] += row["stream_errors"]
            t[3] += row["offline_errors"]
    order = [b for b in BATCHES if b in totals]
    keys = [k for b in order for k in [b, *sorted(k for k in totals if k.startswith(f"{b}/"))]] + ["all"]
    return [(k, *totals[k]) for k in keys]


def print_sources(rows: list[dict]) -> None:
    print(f"\n{'source':28} {'files':>5} {'words':>5} {'stream':>7} {'offline':>7} {'gap':>6}")
    for key, files, words, s_err, o_err in source_rows(rows):
        s, o = 100 * s_err / words, 100 * o_err / words
        print(f"{key:28} {files:5d} {words:5d} {s:6.1f}% {o:6.1f}% {s - o:+6.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="send audio as fast as possible")
    parser.add_argument("--profile", default="realtime")
    parser.add_argument("--vad-silence", type=float)
    parser.add_argument("--partials", action="store_true", help="ask for partials (their commits bind finals)")
    parser.add_argument("--streams", type=int, default=0,
                        help="stream at most this many files at once (default: all at once, the box saturated)")
    parser.add_argument("--compute-type", default="float32", help="for the server and the offline baseline")
    parser.add_argument("--encode-window", choices=("full", "bucketed", "partials"),
                        help="model.encode_window for the server")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument")
    parser.add_argument("--noise", choices=NOISES, help="mix this noise into every recording")
    parser.add_argument("--snr", type=float, default=10.0, help="with --noise: signal-to-noise ratio, dB")
    parser.add_argument("--batch", choices=(*BATCHES, "all"), default="all", help="which batch of the dev set")
    parser.add_argument("--readings", action="store_true",
                        help="stream each VCTK speaker's sentences joined into one reading instead of the files")
    parser.add_argument("--json", type=Path, help="write every file's hypotheses and errors here")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V",
                        help="environment for the server, repeatable (e.g. STT_SERVER_MAX_DECODE_BATCH_SIZE=1)")
    args = parser.parse_args()
    # The noise is drawn over the whole set in order, so a batch's files get the same noise either way.
    everything = dev_set()
    if not everything:
        print("no dev set here (../shared/audio/manifest.tsv)")
        return 1
    workdir = tempfile.TemporaryDirectory(prefix="wer-noise-")
    all_paths = ([item.path for item in everything] if not args.noise
                 else noisy_copies(everything, args.noise, args.snr, Path(workdir.name)))
    chosen = [(item, path) for item, path in zip(everything, all_paths, strict=True)
              if args.batch in ("all", item.batch)]
    if args.readings:
        chosen = join_readings(chosen, Path(workdir.name))
    corpus: list[DevRecording] = [item for item, _ in chosen]
    paths = [path for _, path in chosen]
    print(f"noise: {args.noise} at {args.snr:g} dB SNR" if args.noise else "clean")
    env = dict(pair.split("=", 1) for pair in args.server_env)
    # --fast floods every file at once: no final may fail for waiting its turn behind the flood
    env.setdefault("STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC", "0")
    env.setdefault("STT_SERVER_MAX_SESSIONS_PER_IP", "0")  # every file streams at once, all from this host
    env.setdefault("STT_SERVER_MAX_SESSIONS", str(max(50, len(corpus))))
    if args.encode_window:
        env["STT_MODEL_ENCODE_WINDOW"] = args.encode_window
    with LocalAppliance("--compute-type", args.compute_type, *args.server_arg, env=env,
                        log_path=args.server_log) as server, \
            ThreadPoolExecutor(args.streams or len(corpus)) as pool:
        streamed = list(pool.map(lambda path: stream_file(server.address, path, not args.fast, args.profile,
                                                          args.vad_silence, args.partials), paths))
    offline = [cached_offline(path, args.profile, args.compute_type) for path in paths]
    rows = []
    print(f"{'file':58} {'words':>5} {'stream':>7} {'offline':>7}")
    for item, finals, ref_hyp in zip(corpus, streamed, offline, strict=True):
        hyp = " ".join(text for _, _, text, _ in finals if text)
        s_err, n = word_errors(item.reference, hyp)
        o_err, _ = word_errors(item.reference, ref_hyp)
        rows.append({"file": item.path.name, "batch": item.batch, "group": item.group, "words": n,
                     "stream_errors": s_err, "offline_errors": o_err, "stream": hyp, "offline": ref_hyp,
                     "finals": [[round(start, 3), round(end, 3), text, round(confidence, 4)]
                                for start, end, text, confidence in finals]})
        print(f"{item.path.name:58} {n:5d} {100 * s_err / n:6.1f}% {100 * o_err / n:6.1f}%")
        if s_err > o_err:
            print(f"    stream : {hyp}\n    offline: {ref_hyp}")
    print_sources(rows)
    if args.json:
        condition = f"{args.noise} {args.snr:g} dB" if args.noise else "clean"
        args.json.write_text(json.dumps({"condition": condition, "argv": sys.argv[1:], "files": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
