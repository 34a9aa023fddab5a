"""What the stream's own SNR estimate reads on the dev set, clean and in noise (run by hand).

Runs every recording of the dev set (`clients/dev_set.py`, both batches) through the stream's VAD
frontend and endpointer, as a stream hears it, and prints the `SpeechToNoise` estimate at each
utterance onset and end: per condition, how many onsets have no estimate yet, and the spread of the
readings (min, 10th, 50th, 90th percentile, max). Thresholds that act on the estimate (the noise
context, the noise pre-roll) are chosen from these spreads, not from one file.

    python bench/snr_readings.py                          # clean, pink/white/babble at 10 and 5 dB
    python bench/snr_readings.py --condition white:10 --per-file
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.streaming.endpointing import EndpointConfig, Endpointer, FrameEvent
from appliance.streaming.snr import SpeechToNoise
from appliance.vad import SileroOnnx, VadStream
from clients.audio import load_pcm16
from clients.dev_set import dev_set
from clients.noise import noisy_copies

CONDITIONS = ("clean", "pink:10", "pink:5", "white:10", "white:5", "babble:10", "babble:5")


def readings(path: Path, silero: SileroOnnx) -> tuple[list[float | None], list[float | None]]:
    """The estimate at each onset and at each end of an utterance of one recording."""
    import soxr

    pcm16, rate_hz = load_pcm16(path)
    audio = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768
    if rate_hz != 16_000:
        audio = soxr.resample(audio, rate_hz, 16_000).astype(np.float32)
    frames, probabilities = VadStream(silero).process(audio)
    levels = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    endpointer, snr = Endpointer(EndpointConfig()), SpeechToNoise()
    onsets: list[float | None] = []
    ends: list[float | None] = []
    for probability, level in zip(probabilities.tolist(), levels.tolist(), strict=True):
        event = endpointer.push(probability, level)
        snr.update(probability, level)
        if event is FrameEvent.SPEECH_START:
            onsets.append(snr.db)
        elif event is FrameEvent.SPEECH_END:
            ends.append(snr.db)
    if endpointer.in_speech:
        ends.append(snr.db)
    return onsets, ends


def spread(values: list[float | None]) -> str:
    known = np.array([v for v in values if v is not None])
    if not known.size:
        return f"{len(values):4d} readings, none known"
    q = np.percentile(known, [0, 10, 50, 90, 100])
    return (f"{len(values):4d} readings, {len(values) - known.size:3d} none; "
            + " ".join(f"{v:5.1f}" for v in q) + "  (min p10 p50 p90 max dB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--condition", action="append", choices=CONDITIONS)
    parser.add_argument("--per-file", action="store_true", help="print each file's readings too")
    args = parser.parse_args()
    everything = dev_set()
    silero = SileroOnnx()
    with tempfile.TemporaryDirectory(prefix="snr-") as tmp:
        for condition in args.condition or CONDITIONS:
            if condition == "clean":
                paths = [item.path for item in everything]
            else:
                kind, snr_db = condition.split(":")
                paths = noisy_copies(everything, kind, float(snr_db), Path(tmp))
            all_onsets: list[float | None] = []
            all_ends: list[float | None] = []
            for item, path in zip(everything, paths, strict=True):
                onsets, ends = readings(path, silero)
                all_onsets += onsets
                all_ends += ends
                if args.per_file:
                    show = " ".join("-" if v is None else f"{v:.0f}" for v in onsets)
                    print(f"  {condition:10} {item.batch}/{item.group:12} {item.path.name:44} onsets: {show}")
            print(f"{condition:10} onsets: {spread(all_onsets)}")
            print(f"{condition:10} ends:   {spread(all_ends)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
