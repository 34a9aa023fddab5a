"""What speculative finals cost and save in finals-only sessions, on the dev set (run by hand).

Streams every English recording of the dev set (both batches) at real time, `--concurrency` at a
time, finals only, through a real appliance, then reads its /metrics: the speculative decodes run
(partial decodes: a finals-only session has no other), the finals decoded, and the finals sent. A
final sent without a final decode took its speculation; a speculation no final took was thrown
away (speech came back within the pause, or the endpoint came while it still waited for a slot).

    python bench/speculation.py [--concurrency 8] [--root /tmp/base30]
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clients.local_server as local_server
from clients.audio import load_pcm16
from clients.dev_set import dev_set
from clients.local_server import LocalAppliance
from clients.sdk import SttClient


def finals(address: str, path: Path) -> int:
    pcm16, rate_hz = load_pcm16(path)
    with SttClient(address) as client:
        session = client.create_session()
        return sum(r.is_final for r in client.stream_audio(session, pcm16, rate_hz, chunk_ms=100, realtime=True))


def counter(metrics: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="checkout whose server runs (default: this one)")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    items = dev_set()
    if not items:
        print("no dev set here")
        return 1
    if args.root:
        local_server.REPO_ROOT = args.root.resolve()
    env = {"STT_SERVER_MAX_SESSIONS_PER_IP": "0"}
    with LocalAppliance(env=env) as server, ThreadPoolExecutor(args.concurrency) as pool:
        sent = sum(pool.map(lambda item: finals(server.address, item.path), items))
        with urllib.request.urlopen(server.http_url + "/metrics", timeout=30) as response:
            metrics = response.read().decode()
    guesses = counter(metrics, "stt_decodes_total", kind="partial", outcome="success")
    decoded = counter(metrics, "stt_decodes_total", kind="final", outcome="success")
    warmup = 1 if decoded > sent else 0  # the server's warm-up decode, if counted
    reused = sent - (decoded - warmup)
    print(f"{len(items)} recordings, {args.concurrency} at a time, finals only; root {args.root or 'this checkout'}")
    print(f"finals sent {sent}, final decodes {decoded - warmup:g}, speculative decodes {guesses:g}")
    if guesses:
        print(f"finals that took their speculation {reused:g} ({100 * reused / max(sent, 1):.0f} % of finals); "
              f"speculations thrown away {guesses - reused:g} ({100 * (guesses - reused) / guesses:.0f} %)")
    busy = {kind: counter(metrics, "stt_decode_seconds_sum", kind=kind) for kind in ("final", "partial")}
    print(f"decode time: finals {busy['final']:.1f} s, speculations {busy['partial']:.1f} s, "
          f"together {busy['final'] + busy['partial']:.1f} s (a decode batched with others counts whole)")
    dropped = re.findall(r"^stt_partials_dropped_total (\S+)", metrics, re.M)
    print(f"partials dropped (queued speculations superseded or shed): {dropped[0] if dropped else '?'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
