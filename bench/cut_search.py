"""Where does a cut at the buffer cap land: in a pause, or inside speech? (run by hand)

    python bench/cut_search.py                                    # clean, white/babble/pink at 10 and 5 dB
    python bench/cut_search.py --conditions white:10 babble:10 --spans 1.5 3 5

When an utterance reaches the buffer cap, the segmenter cuts it after the least speech-like frame
(lowest Silero probability) among the last few seconds (appliance.streaming.segmenter). This replays
that choice on the English dev set (../shared/audio) with noise mixed in as bench/wer.py mixes it:
for a cap falling every 5 frames through each recording's speech, it takes the frame each search
span would cut after and asks the clean recording's VAD whether that frame is a pause (probability
under 0.35, the endpoint threshold). Prints, per condition and span, the share of cuts that land in
a pause and how far back from the cap they land on average.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.vad import FRAME_SEC, SileroOnnx, VadStream
from bench.backends import load_16k
from clients.dev_set import dev_set
from clients.noise import noisy_copies

PAUSE_BELOW = 0.35
STEP_FRAMES = 5


def probabilities(model: SileroOnnx, path: Path) -> np.ndarray:
    """Silero's speech probability for each 32 ms frame of the recording at 16 kHz."""
    return VadStream(model).process(load_16k(path))[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conditions", nargs="+",
                        default=["clean", "white:10", "babble:10", "pink:10", "white:5", "babble:5", "pink:5"])
    parser.add_argument("--spans", type=float, nargs="+", default=[1.5, 3.0, 5.0], help="search spans, seconds")
    args = parser.parse_args()
    recordings = dev_set()
    if not recordings:
        print("no dev set here (../shared/audio/manifest.tsv)")
        return 1
    model = SileroOnnx()
    clean = [probabilities(model, item.path) for item in recordings]
    spans = [round(sec / FRAME_SEC) for sec in args.spans]
    longest = max(spans)
    print(f"{'condition':10} " + "  ".join(f"{sec:>4g} s: pause, back" for sec in args.spans))
    for condition in args.conditions:
        with tempfile.TemporaryDirectory(prefix="cut-search-") as workdir:
            if condition == "clean":
                paths = [item.path for item in recordings]
            else:
                kind, snr = condition.split(":")
                paths = noisy_copies(recordings, kind, float(snr), Path(workdir))
            noisy = [probabilities(model, path) for path in paths]
        cuts = np.zeros(len(spans))
        in_pause = np.zeros(len(spans))
        back_sec = np.zeros(len(spans))
        for heard, truth in zip(noisy, clean, strict=True):
            n = min(heard.size, truth.size)
            speech = np.flatnonzero(truth[:n] > 0.5)
            if speech.size < 2 * longest:
                continue  # too short to reach a cap
            for cap in range(speech[0] + longest, speech[-1], STEP_FRAMES):
                for i, span in enumerate(spans):
                    frame = cap - span + int(np.argmin(heard[cap - span:cap]))
                    cuts[i] += 1
                    in_pause[i] += truth[frame] < PAUSE_BELOW
                    back_sec[i] += (cap - frame) * FRAME_SEC
        print(f"{condition:10} " + "  ".join(f"{p:>10.0%}, {b:4.2f} s" for p, b in
                                             zip(in_pause / cuts, back_sec / cuts, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
