"""Decode time per recording for both backends on the same weights (run by hand).

Each English recording of the dev set (../shared/audio and its more/ folder) is decoded offline,
whole, by faster-whisper and by torch_whisper (openai-whisper on weights converted from the same
pack), float32, greedy, on this machine's CPU; after a warm-up decode each. Recordings longer than
one 30 s window are skipped: the appliance never sends a backend more than one window. Prints
per-file seconds, the torch/ct2 ratio, and whether the texts agree.

    python bench/backends.py [--model tiny.en] [--threads N] [--repeat 1]
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
from clients.corpus import normalize, word_errors
from clients.dev_set import dev_set

MAX_UTTERANCE_SEC = 29.0  # one Whisper window, less the backends' margin


def load_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return audio if rate_hz == 16_000 else soxr.resample(audio, rate_hz, 16_000).astype(np.float32)


def timed_decode(backend, audio: np.ndarray, repeat: int) -> tuple[float, str]:
    best, text = float("inf"), ""
    for _ in range(repeat):
        started = time.perf_counter()
        transcript = backend.transcribe(audio, DecodeOptions(), language="en", task="transcribe")
        best = min(best, time.perf_counter() - started)
        text = " ".join(s.text.strip() for s in transcript.segments)
    return best, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per backend (0 = all cores)")
    parser.add_argument("--repeat", type=int, default=1, help="decodes per file; the fastest counts")
    args = parser.parse_args()
    recordings = dev_set()  # both batches
    if not recordings:
        print("no ../shared/audio corpus here")
        return 1
    model = resolve_model(args.model)
    common = {"model_id": args.model, "model_path": str(model.path), "english_only": model.english_only,
              "compute_type": "float32", "cpu_threads": args.threads}
    backends = {name: load_backend(name, **common) for name in ("faster_whisper", "torch_whisper")}
    warm = load_16k(recordings[0].path)
    for backend in backends.values():
        backend.transcribe(warm, DecodeOptions(), language="en", task="transcribe")
    print(f"model {args.model}, float32, greedy, {args.threads or 'all'} threads, best of {args.repeat}")
    print(f"{'file':58} {'audio s':>7} {'ct2 s':>7} {'torch s':>7} {'ratio':>6} {'same text':>9}")
    totals = {"audio": 0.0, "faster_whisper": 0.0, "torch_whisper": 0.0}
    errors = {"faster_whisper": 0, "torch_whisper": 0}
    words = 0
    for recording in recordings:
        audio = load_16k(recording.path)
        if audio.size / 16_000 > MAX_UTTERANCE_SEC:
            print(f"{recording.path.name[:58]:58} {audio.size / 16_000:7.1f}  skipped: longer than one decode "
                  "window (the appliance cuts utterances before that)")
            continue
        results = {name: timed_decode(backend, audio, args.repeat) for name, backend in backends.items()}
        ct2_sec, torch_sec = results["faster_whisper"][0], results["torch_whisper"][0]
        same = normalize(results["faster_whisper"][1]) == normalize(results["torch_whisper"][1])
        print(f"{recording.path.name[:58]:58} {audio.size / 16_000:7.1f} {ct2_sec:7.2f} {torch_sec:7.2f} "
              f"{torch_sec / ct2_sec:6.2f} {'yes' if same else 'no':>9}")
        totals["audio"] += audio.size / 16_000
        for name in backends:
            totals[name] += results[name][0]
            errors[name] += word_errors(recording.reference, results[name][1])[0]
        words += word_errors(recording.reference, results["faster_whisper"][1])[1]
    ratio = totals["torch_whisper"] / totals["faster_whisper"]
    print(f"{'total':58} {totals['audio']:7.1f} {totals['faster_whisper']:7.2f} {totals['torch_whisper']:7.2f} "
          f"{ratio:6.2f}")
    print(f"pooled WER: faster_whisper {100 * errors['faster_whisper'] / words:.1f}%, "
          f"torch_whisper {100 * errors['torch_whisper'] / words:.1f}% ({words} words)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
