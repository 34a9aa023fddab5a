"""Streaming WER against offline faster-whisper on the speech corpus (run by hand).

Streams every English recording of ../shared/audio through a real appliance (all files at once,
realtime pacing unless --fast), transcribes each file offline with faster-whisper on the same model,
and prints per-file and pooled WER for both.

    python bench/wer.py [--fast] [--profile realtime] [--vad-silence 0.5]
    python bench/wer.py --fast --noise pink --snr 5     # the same, with noise mixed into every file

--noise mixes noise made here into each recording at --snr dB (against the recording's own RMS)
before both paths hear it: white (Gaussian), pink (1/f, shaped in the frequency domain) or babble
(six other recordings of the corpus, summed at random offsets). Seeded, so runs compare.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients.audio import load_pcm16
from clients.corpus import english_corpus, offline_transcribe, word_errors
from clients.local_server import LocalAppliance
from clients.noise import NOISES, noisy_copies
from clients.sdk import SttClient


def stream_file(address: str, path: Path, realtime: bool, profile: str, vad_silence: float | None,
                partials: bool = False) -> str:
    pcm16, rate_hz = load_pcm16(path)
    with SttClient(address) as client:
        session = client.create_session(decode_profile=profile, vad_silence_sec=vad_silence,
                                        attributes={"partial": "true"} if partials else None)
        finals = [r.text for r in client.stream_audio(session, pcm16, rate_hz, chunk_ms=100, realtime=realtime)
                  if r.is_final]
    return " ".join(t for t in finals if t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="send audio as fast as possible")
    parser.add_argument("--profile", default="realtime")
    parser.add_argument("--vad-silence", type=float)
    parser.add_argument("--partials", action="store_true", help="ask for partials (their commits bind finals)")
    parser.add_argument("--compute-type", default="float32", help="for the server and the offline baseline")
    parser.add_argument("--encode-window", choices=("full", "bucketed", "partials"),
                        help="model.encode_window for the server")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `serve` argument")
    parser.add_argument("--noise", choices=NOISES, help="mix this noise into every recording")
    parser.add_argument("--snr", type=float, default=10.0, help="with --noise: signal-to-noise ratio, dB")
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V",
                        help="environment for the server, repeatable (e.g. STT_SERVER_MAX_DECODE_BATCH_SIZE=1)")
    args = parser.parse_args()
    corpus = english_corpus()
    if not corpus:
        print("no ../shared/audio corpus here")
        return 1
    workdir = tempfile.TemporaryDirectory(prefix="wer-noise-")
    paths = ([item.path for item in corpus] if not args.noise
             else noisy_copies(corpus, args.noise, args.snr, Path(workdir.name)))
    if args.noise:
        print(f"noise: {args.noise} at {args.snr:g} dB SNR")
    env = dict(pair.split("=", 1) for pair in args.server_env)
    # --fast floods every file at once: no final may fail for waiting its turn behind the flood
    env.setdefault("STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC", "0")
    env.setdefault("STT_SERVER_MAX_SESSIONS_PER_IP", "0")  # every file streams at once, all from this host
    if args.encode_window:
        env["STT_MODEL_ENCODE_WINDOW"] = args.encode_window
    with LocalAppliance("--compute-type", args.compute_type, *args.server_arg, env=env) as server, \
            ThreadPoolExecutor(len(corpus)) as pool:
        streamed = list(pool.map(lambda path: stream_file(server.address, path, not args.fast, args.profile,
                                                          args.vad_silence, args.partials), paths))
    offline = [offline_transcribe(path, profile=args.profile, compute_type=args.compute_type) for path in paths]
    totals = [0, 0, 0]
    print(f"{'file':58} {'words':>5} {'stream':>7} {'offline':>7}")
    for item, hyp, ref_hyp in zip(corpus, streamed, offline, strict=True):
        s_err, n = word_errors(item.reference, hyp)
        o_err, _ = word_errors(item.reference, ref_hyp)
        totals[0] += s_err
        totals[1] += o_err
        totals[2] += n
        print(f"{item.path.name:58} {n:5d} {100 * s_err / n:6.1f}% {100 * o_err / n:6.1f}%")
        if s_err > o_err:
            print(f"    stream : {hyp}\n    offline: {ref_hyp}")
    print(f"{'pooled':58} {totals[2]:5d} {100 * totals[0] / totals[2]:6.1f}% {100 * totals[1] / totals[2]:6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
