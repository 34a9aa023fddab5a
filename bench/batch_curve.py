"""Batch-size curve of the faster-whisper backend (run by hand): what one batched decode of B finals costs.

    flock -x /tmp/cpu.lock timeout 420 .venv/bin/python bench/batch_curve.py            # tiny.en int8, 1 thread
    ... --threads 2 --compute-type int8 --sizes 1 2 4 8 --repeat 3
    ... --parallel 2 --sizes 4 --encoder-windows           # two slots (replicas) decoding at once

Decodes B of the four held-out sentences of the synchronized harness (5-7 s each, so a 10 s encoder
window) in one `transcribe_batch` call (B = 1: the single path, `transcribe`), with the appliance's
own options (greedy, bucketed window), best of --repeat. Prints per batch size the wall time of the
call, the time per utterance, and the speed-up over B single decodes one after another, so the
scheduler's batch sizes can be read off it: a batch is worth taking while its time per utterance
keeps falling and its whole wall time stays within the latency a final may add.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.decode_options import DecodeOptions
from appliance.models.backends import load_backend
from appliance.models.store import resolve_model

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
SENTENCES = ("sent_en_librispeech_dev-clean_1272-128104-0000", "sent_en_librivox_sense_and_sensibility_0870",
             "sent_en_librivox_sense_and_sensibility_0890", "sent_en_librivox_sense_and_sensibility_0920")


def load_16k(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    if rate_hz != 16_000:
        raise SystemExit(f"{path}: {rate_hz} Hz, expected 16 kHz")
    return audio.mean(axis=1)


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of the one replica (a slot has 1 on 2 cores)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--encode-window", default="bucketed", choices=("bucketed", "full"))
    ap.add_argument("--encoder-windows", type=float, nargs="*", default=[5, 8, 10, 15, 30],
                    help="also time the encoder alone on windows of these seconds, batches of 1 and 4")
    ap.add_argument("--parallel", type=int, default=1,
                    help="also run this many replicas at once (one thread each), a batch of each size on each: "
                         "finals per second of the whole box")
    args = ap.parse_args()
    audios = [load_16k(SHARED_AUDIO / f"{name}.wav") for name in SENTENCES]
    model = resolve_model(args.model)
    backend = load_backend("faster_whisper", model_id=args.model, model_path=str(model.path),
                           english_only=model.english_only, compute_type=args.compute_type,
                           cpu_threads=args.threads, encode_window=args.encode_window, pool_size=args.parallel)
    options = DecodeOptions()
    backend.transcribe(audios[0], options, language="en", task="transcribe")  # warm-up
    backend.transcribe_batch(audios[:2], options, language="en", task="transcribe")
    single = sum(timed(lambda a=a: backend.transcribe(a, options, language="en", task="transcribe"), args.repeat)
                 for a in audios) / len(audios)
    print(f"{args.model} {args.compute_type}, {args.threads} thread(s), {args.encode_window} window, "
          f"best of {args.repeat}; one single decode: {single:.3f} s (mean of the four sentences)")
    print(f"{'batch':>5} {'wall s':>7} {'s/utt':>7} {'vs B singles':>12}")
    for size in args.sizes:
        batch = [audios[i % len(audios)] for i in range(size)]
        if size == 1:
            wall = single
        else:
            wall = timed(lambda b=batch: backend.transcribe_batch(b, options, language="en", task="transcribe"),
                         args.repeat)
        print(f"{size:>5} {wall:7.3f} {wall / size:7.3f} {single * size / wall:11.2f}x", flush=True)
    if args.parallel > 1:
        parallel_table(backend, audios, options, args.sizes, args.parallel, args.repeat)
    if args.encoder_windows:
        encoder_table(backend, audios, args.encoder_windows, args.repeat)
    return 0


def parallel_table(backend, audios: list[np.ndarray], options: DecodeOptions, sizes: list[int], parallel: int,
                   repeat: int) -> None:
    """`parallel` slots each decoding a batch of B at once, as the scheduler's slots do under a burst
    of finals: the wall time of the round and the finals per second the box delivers."""
    from concurrent.futures import ThreadPoolExecutor

    print(f"{parallel} replicas at once: {'batch':>5} {'wall s':>7} {'finals/s':>9}")
    with ThreadPoolExecutor(parallel) as pool:
        for size in sizes:
            batch = [audios[i % len(audios)] for i in range(size)]

            def one(b=batch):
                if len(b) == 1:
                    return backend.transcribe(b[0], options, language="en", task="transcribe")
                return backend.transcribe_batch(b, options, language="en", task="transcribe")

            wall = timed(lambda: [f.result() for f in [pool.submit(one) for _ in range(parallel)]], repeat)
            print(f"{'':>21}{size:>5} {wall:7.3f} {parallel * size / wall:9.1f}", flush=True)


def encoder_table(backend, audios: list[np.ndarray], windows: list[float], repeat: int) -> None:
    """The encoder alone (features to encoder output) per window: what a decode pays before its
    first token, and the part of a batch that does not shrink per utterance."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    model = backend._model
    print(f"{'window s':>8} {'encoder s (1)':>14} {'encoder s/utt (4)':>18}")
    for window in windows:
        frames = int(window * 100)
        features = [pad_or_trim(model.feature_extractor(a), frames) for a in audios]
        row = []
        for size in (1, 4):
            batch = np.ascontiguousarray(np.stack(features[:size]).astype(np.float32))
            row.append(timed(lambda b=batch: model.model.encode(ctranslate2.StorageView.from_array(b)), repeat) / size)
        print(f"{window:8g} {row[0]:14.3f} {row[1]:18.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
