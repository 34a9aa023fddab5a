"""The cost of TLS on the OpenAI client plane: the same requests against an in-process appliance with
plain HTTP and one with the operator's certificate (the terminator in front of waitress), in one run.

    python bench/openai_tls.py [--rounds 30] [--body-mb 20]

Prints, for each: a fresh connection's GET /v1/models (connect, handshake, request: median and p90 ms),
a request on a kept-alive connection (median ms), and a large upload body piped through (a file of
noise the decoder refuses at once with ERR1003, so the figure is transfer, not transcription: MB/s).
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.inprocess import InProcessAppliance
from tests.test_tls import make_self_signed


def connection(port: int, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if context is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    return http.client.HTTPSConnection("localhost", port, timeout=60, context=context)


def fresh_requests(port: int, context, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn = connection(port, context)
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        times.append(time.perf_counter() - started)
        conn.close()
    return times


def kept_alive(port: int, context, rounds: int) -> list[float]:
    conn = connection(port, context)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
        times.append(time.perf_counter() - started)
    conn.close()
    return times


def upload_rate(port: int, context, body_mb: int) -> float:
    boundary = uuid.uuid4().hex
    noise = bytes(range(256)) * (body_mb * 4096)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".encode()
            + noise + f"\r\n--{boundary}--\r\n".encode())
    conn = connection(port, context)
    started = time.perf_counter()
    conn.request("POST", "/v1/audio/transcriptions", body=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    answer = conn.getresponse()
    answer.read()
    elapsed = time.perf_counter() - started
    conn.close()
    assert answer.status == 400, answer.status
    return len(body) / 1e6 / elapsed


def ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=10)[int(q * 10) - 1] if q < 1 else 1000 * max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--body-mb", type=int, default=20)
    args = parser.parse_args()
    certs = make_self_signed(Path(tempfile.mkdtemp()), "bench")
    context = ssl.create_default_context(cafile=str(certs.cert))
    env = {"STT_HTTP_RATE_LIMIT_RPS": "0", "STT_OPENAI_MAX_UPLOAD_BYTES": str((args.body_mb + 1) * 1024 * 1024)}
    with InProcessAppliance(env=env) as plain, \
            InProcessAppliance("--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), env=env) as tls:
        runs = {"http ": (plain.openai_port, None), "https": (tls.openai_port, context)}
        for _ in range(2):  # interleaved, twice: the second round is the one printed
            figures = {}
            for name, (port, ctx) in runs.items():
                fresh = fresh_requests(port, ctx, args.rounds)
                alive = kept_alive(port, ctx, args.rounds)
                rate = upload_rate(port, ctx, args.body_mb)
                figures[name] = (statistics.median(fresh) * 1000, ms(fresh, 0.9), statistics.median(alive) * 1000,
                                 rate)
        for name, (median, p90, alive, rate) in figures.items():
            print(f"{name}: fresh connection GET /v1/models median {median:.1f} ms, p90 {p90:.1f} ms; "
                  f"kept-alive {alive:.2f} ms; {args.body_mb} MB upload body {rate:.0f} MB/s")


if __name__ == "__main__":
    main()
