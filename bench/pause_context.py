"""Pauses inside sentences: streamed WER and the number of finals on multilingual and long-form speech
(run by hand).

Streams the non-English recordings and the long-form files (`long_*`) of ../shared/audio and
../shared/audio/more through a real appliance, finals only, and prints per file the number of finals,
how many were decoded with the previous final as context (gap to it), and the WER of the joined finals
(characters for Chinese; Whisper's basic normaliser for the other non-English languages, its English
one for English). `--root` runs the server of another checkout (a worktree of an older commit), so
a before/after comparison runs the same script:

    python bench/pause_context.py --model base                   # this checkout
    python bench/pause_context.py --model base --root /tmp/base30  # the build before

Finals-only segmentation depends on the audio alone, so `--fast` (the default) gives the finals a
real-time stream gets; `--realtime` paces the chunks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clients.local_server as local_server
from clients.audio import load_pcm16
from clients.corpus import SHARED_AUDIO, Recording, corpus, normalize
from clients.local_server import LocalAppliance
from clients.sdk import SttClient


def chosen(which: str) -> list[Recording]:
    everything = corpus(SHARED_AUDIO) + corpus(SHARED_AUDIO / "more")
    return [r for r in everything
            if (which in ("multilingual", "all") and r.language != "en")
            or (which in ("long", "all") and r.path.name.startswith("long_"))]


def tokens(language: str, text: str) -> list[str]:
    if language == "en":
        return normalize(text).split()
    from whisper_normalizer.basic import BasicTextNormalizer

    clean = BasicTextNormalizer()(text)
    if language in ("zh", "ja"):
        return [c for c in re.sub(r"\s+", "", clean)]
    return clean.split()


def errors(language: str, reference: str, hypothesis: str) -> tuple[int, int]:
    import jiwer

    ref, hyp = tokens(language, reference), tokens(language, hypothesis)
    if not hyp:
        return len(ref), len(ref)
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def stream_file(address: str, item: Recording, realtime: bool, language: str) -> list[dict]:
    pcm16, rate_hz = load_pcm16(item.path)
    with SttClient(address) as client:
        # the session asks for the pause context (off by default); a build without it ignores the attribute
        session = client.create_session(language=language, attributes={"pause_context": "true"})
        return [{"text": r.text, "start": r.start_sec, "end": r.end_sec, "language": r.language}
                for r in client.stream_audio(session, pcm16, rate_hz, chunk_ms=100, realtime=realtime)
                if r.is_final]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="checkout whose server runs (default: this one)")
    parser.add_argument("--model", default="base")
    parser.add_argument("--files", choices=("multilingual", "long", "all"), default="all")
    parser.add_argument("--language", default="", help="session language ('' detects)")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--json", type=Path, help="write every file's finals here")
    parser.add_argument("--server-arg", action="append", default=[])
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V",
                        help="server environment, e.g. STT_SERVER_MAX_DECODE_BATCH_SIZE=1 (no batching: "
                        "a batched decode may differ from a single one in a word)")
    args = parser.parse_args()
    items = chosen(args.files)
    if not items:
        print("no ../shared/audio corpus here")
        return 1
    if args.root:
        local_server.REPO_ROOT = args.root.resolve()
    env = {"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0", "STT_SERVER_MAX_SESSIONS_PER_IP": "0",
           **dict(pair.split("=", 1) for pair in args.server_env)}
    with LocalAppliance("--model", args.model, *args.server_arg, env=env) as server, \
            ThreadPoolExecutor(len(items)) as pool:
        finals = list(pool.map(lambda item: stream_file(server.address, item, args.realtime, args.language), items))
    print(f"root {args.root or 'this checkout'}, model {args.model}, language {args.language or 'detected'}")
    print(f"{'file':52} {'lang':>4} {'sec':>6} {'finals':>6} {'gaps<1s':>7} {'units':>5} {'errors':>6} {'WER':>6}")
    total_e = total_n = total_finals = 0
    for item, results in zip(items, finals, strict=True):
        text = " ".join(r["text"] for r in results if r["text"])
        e, n = errors(item.language, item.reference, text)
        short_gaps = sum(1 for a, b in itertools.pairwise(results) if b["start"] - a["end"] < 1.0)
        total_e, total_n, total_finals = total_e + e, total_n + n, total_finals + len(results)
        print(f"{item.path.name[:52]:52} {item.language:>4} {item.duration_sec:6.1f} {len(results):6d} "
              f"{short_gaps:7d} {n:5d} {e:6d} {100 * e / max(n, 1):5.1f}%")
    print(f"{'pooled':52} {'':>4} {'':>6} {total_finals:6d} {'':>7} {total_n:5d} {total_e:6d} "
          f"{100 * total_e / max(total_n, 1):5.1f}%")
    if args.json:
        args.json.write_text(json.dumps({item.path.name: results for item, results in zip(items, finals, strict=True)},
                                        ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
