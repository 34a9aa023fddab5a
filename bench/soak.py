"""Soak: hours of realistic churn at ~75 % of capacity, then check that the server leaked nothing.

    python bench/soak.py                                    # 30 min, 18 streams (75 % of 24), own server
    python bench/soak.py --minutes 120 --capacity 32 --json soak.json
    python bench/soak.py --minutes 2 --streams 6 --report-sec 30
    python bench/soak.py --server 10.0.0.5:50051 --server-pid 4242 --http-url http://10.0.0.5:8000 \\
        --session-timeout-sec 60

Without --server it starts its own appliance through the load tester's `target_server` (per-IP
session cap lifted; `--server-arg` / `--server-env` as in `python -m clients.loadtest`), on an HTTP
port it picks, with `metrics.expose_api_key_sessions` on so /metrics.json shows per-key tickets.

What a run does: `--streams` workers (threads) each keep one session busy until `--minutes` have
passed, then finish the session they are on. For every session a worker picks a kind at random
(`--seed`; weights `--mix`):

  normal          stream 1-3 recordings at real-time pace (100 ms chunks, `--gap-sec` of silence
                  after each), half-close, read every final. The majority.
  cancel          as normal, but the client cancels the RPC at a random point of a recording.
  disconnect      as normal on a connection of its own, closed (grpc channel.close()) at a random
                  point: no half-close. (grpcio's close() resets the call before it drops the
                  connection; a client that vanishes without a word is not simulated.)
  stall           stop sending in the middle of a recording for 30-60 % of the server's session
                  timeout, then continue at real-time pace; must end like a normal session.
  stall_timeout   stop sending in the middle of a recording past the session timeout: the server
                  must send the open utterance's final, then end the stream with ERR1012.
  never_streamed  CreateSession, then nothing: the session must expire server-side. The worker
                  pauses 1-3 s before its next session.

Audio: `--audio` files/folders, default the English recordings of ../shared/audio, else the ALSA
prompts (/usr/share/sounds/alsa); files longer than `--max-file-sec` are skipped. Partial results
are on (`--no-partials` turns them off) so that an utterance the server started but never
finalised is visible.

Printed figures:

  progress line       every `--report-sec` (default 60): elapsed m:ss, server RSS (MB, VmRSS of
                      /proc/PID/status), sessions done, finals received, errors (unexpected /
                      expected), sessions open right now.
  per kind            sessions; finals and partials received; `expected` = ended the way the kind
                      should (normal/stall: clean end; cancel: the client's cancel; disconnect:
                      CANCELLED; stall_timeout: ERR1012; never_streamed: created); `unexpected`
                      by code (ERR10xx from the server, else the gRPC status name; NO_ERR1012 when
                      a stall past the timeout ended cleanly; create:CODE for a refused
                      CreateSession); `lost` (below).
  finals lost         for normal, stall and stall_timeout sessions: utterances that got partials
                      but no final, plus utterance indices skipped below a final that arrived
                      (the server numbers finals 0, 1, 2, ... per stream, so a gap is a final that
                      never came); for every kind, a stream that ended with an unexpected error
                      counts its open utterances (at least 1); cancel/disconnect sessions count
                      only the skipped indices (what was open at the cut is legitimately lost).
  RSS                 first / last / peak over the load (sampled every `--sample-sec`), the RSS
                      after the settle, and the least-squares slope in MB/hour over the load after
                      its first 10 % (warm-up: model caches, allocator arenas). Reported; it fails
                      the run only with `--rss-slope-limit`.
  leaks               after every worker stopped and a settle time (`--settle-sec`, default the
                      server's session timeout + 5 s, so never-streamed sessions expire), read from
                      /metrics.json: active sessions, streaming calls, VAD slots leased, buffered
                      audio bytes, admission (client IPs holding tickets; tickets per API key),
                      decodes queued and in flight, pending decodes of live streams — each
                      expected 0 — and finals lost (expected 0). A figure /metrics.json does not
                      expose is printed as "n/a (not exposed)" and is not judged. /metrics.json is
                      read twice: expiry of never-streamed sessions is lazy (done when the session
                      registry is next touched), and the first read may show their admission
                      tickets; a difference between the reads is printed as a note.
  server log          (own server only) tracebacks, ERROR/CRITICAL and WARNING lines counted; the
                      first 10 tracebacks/ERROR lines shown; `--server-log OUT` keeps a copy.

Exit 0 when no leak, no lost final and no unexpected error (and the RSS slope within
--rss-slope-limit when given); 1 otherwise or when the server did not start; 2 for usage errors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `clients` and `appliance` importable
    sys.path.insert(0, str(REPO_ROOT))

from clients.loadtest import (
    SAMPLE_RATE_HZ,
    Clip,
    UsageError,
    add_target_arguments,
    default_audio,
    find_audio,
    load_clips,
    target_server,
)
from clients.loadtest.procstats import MB, read_sample
from clients.loadtest.runner import error_code
from clients.sdk import SttClient, SttError, split_pcm16

KINDS = ("normal", "cancel", "disconnect", "stall", "stall_timeout", "never_streamed")
DEFAULT_MIX = {"normal": 72, "cancel": 8, "disconnect": 7, "stall": 5, "stall_timeout": 3, "never_streamed": 5}
EXPECTED_END = {"normal": None, "stall": None, "cancel": "CLIENT_CANCEL", "disconnect": "CANCELLED",
                "stall_timeout": "ERR1012", "never_streamed": None}
FINALS_KINDS = {"normal", "stall", "stall_timeout"}  # every utterance they open must get its final
DEFAULT_CAPACITY = 24  # realtime streams this 2-core box holds (docs/capacity.md)
LOAD_SHARE = 0.75
WARMUP_SHARE = 0.10  # the RSS slope ignores the first 10 % of the load
RETRY_AFTER_REFUSAL_SEC = 1.0
STALL_TIMEOUT_MARGIN_SEC = 2.0  # a stall past the timeout lasts timeout + this, then sending resumes


class _ClientCancel(Exception):
    """Raised by a session's chunk source: the SDK then cancels the call and re-raises it."""


# --- options ------------------------------------------------------------------------------------

def parse_mix(text: str) -> dict[str, float]:
    mix = dict.fromkeys(KINDS, 0.0)
    for part in text.split(","):
        kind, sep, weight = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in mix:
            raise argparse.ArgumentTypeError(f"expected KIND=WEIGHT with KIND in {', '.join(KINDS)}, got {part!r}")
        try:
            mix[kind] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {kind} is not a number: {weight!r}") from None
    if any(w < 0 for w in mix.values()) or not sum(mix.values()):
        raise argparse.ArgumentTypeError(f"weights must be >= 0 and not all 0, got {text!r}")
    return mix


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser)
    group = parser.add_argument_group("soak")
    group.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default: 30)")
    count = group.add_mutually_exclusive_group()
    count.add_argument("--streams", type=int, help=f"concurrent sessions (default: 75 %% of --capacity, "
                                                   f"i.e. {round(LOAD_SHARE * DEFAULT_CAPACITY)})")
    count.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                       help=f"measured capacity in realtime streams; load = 75 %% of it (default: {DEFAULT_CAPACITY})")
    group.add_argument("--mix", type=parse_mix, default=dict(DEFAULT_MIX),
                       help="session kinds and weights (default: "
                            + ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()) + ")")
    group.add_argument("--audio", action="append", metavar="FILE_OR_DIR",
                       help="recording or folder, repeatable (default: English files of ../shared/audio, "
                            "else the ALSA test prompts)")
    group.add_argument("--max-file-sec", type=float, default=40.0, help="skip longer recordings (default: 40)")
    group.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True,
                       help="ask for partial results (default: on, so unfinished utterances are visible)")
    group.add_argument("--chunk-ms", type=float, default=100.0, help="audio per chunk (default: 100)")
    group.add_argument("--gap-sec", type=float, default=1.0, help="silence after each recording (default: 1)")
    group.add_argument("--ramp-sec", type=float, default=5.0, help="spread worker starts (default: 5)")
    group.add_argument("--seed", type=int, default=1, help="random seed of the session kinds and cut points")
    group.add_argument("--sample-sec", type=float, default=5.0, help="RSS sampling period (default: 5)")
    group.add_argument("--report-sec", type=float, default=60.0, help="progress line period (default: 60)")
    group.add_argument("--session-timeout-sec", type=float,
                       help="the server's server.session_timeout_sec (default: read from the config the "
                            "server runs with: config/server.yaml, STT_* env, --server-env, --server-arg)")
    group.add_argument("--settle-sec", type=float,
                       help="wait after the load before reading the leaks (default: session timeout + 5)")
    group.add_argument("--rss-slope-limit", type=float, metavar="MB_PER_HOUR",
                       help="fail when the RSS slope passes this (default: reported, not judged)")
    group.add_argument("--http-url", help="the server's HTTP plane (required with --server), e.g. "
                                          "http://127.0.0.1:8000")
    group.add_argument("--http-token", default=os.environ.get("STT_OBSERVABILITY_TOKEN", ""),
                       help="bearer token for /metrics.json (default: $STT_OBSERVABILITY_TOKEN)")
    group.add_argument("--json", metavar="OUT", help="write every figure, sample and session here")
    group.add_argument("--server-log", metavar="OUT", help="copy the log of the server this started here")
    return parser


def _serve_config(args: argparse.Namespace):
    """The config the server runs with, rebuilt as `appliance serve` builds it (files in the repo root,
    STT_* env, --server-env, --server-arg); with --server, this host's config and env."""
    from appliance.config import load_config_from_args
    from appliance.config_cli import add_serve_arguments
    from appliance.config_sources import default_config_paths

    parser = argparse.ArgumentParser(add_help=False)
    add_serve_arguments(parser)
    server_yaml, model_yaml = default_config_paths(REPO_ROOT)
    parser.set_defaults(config=str(server_yaml), model_config=str(model_yaml))
    namespace, _ = parser.parse_known_args([] if args.server else list(args.server_arg))
    env = dict(os.environ) if args.server else {**os.environ, **dict(args.server_env)}
    return load_config_from_args(namespace, env=env)


def session_timeout(args: argparse.Namespace) -> tuple[float, str]:
    if args.session_timeout_sec is not None:
        return args.session_timeout_sec, "--session-timeout-sec"
    try:
        config = _serve_config(args)
    except Exception as err:  # a config this host cannot load: say so, assume the shipped default
        return 60.0, f"assumed: the server config could not be read here ({type(err).__name__}: {err})"
    where = "this host's config/server.yaml and STT_* env" if args.server else "the server's config"
    return float(config.server.session_timeout_sec or 60.0), where


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flag_value(server_args: list[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(server_args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(server_args):
            value = server_args[i + 1]
    return value


def prepare_own_server(args: argparse.Namespace) -> str:
    """HTTP URL of the server target_server will start: a free port unless --server-arg names one.
    Also asks it to expose per-API-key session counts in /metrics.json (unless --server-env says)."""
    port = _flag_value(args.server_arg, "--metrics-port")
    if port is None or port == "0":
        port = str(_free_port())
        args.server_arg = [*args.server_arg, f"--metrics-port={port}"]
    host = _flag_value(args.server_arg, "--http-host") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    args.server_env = [("STT_METRICS_EXPOSE_API_KEY_SESSIONS", "true"), *args.server_env]  # later pairs win
    return f"http://{host}:{port}"


# --- sessions ------------------------------------------------------------------------------------

@dataclass
class SessionRecord:
    worker: int
    seq: int
    kind: str
    files: list[str] = field(default_factory=list)
    started_sec: float = 0.0  # since the load started
    ended_sec: float = 0.0
    created: bool = False
    code: str | None = None  # how the stream ended: None = cleanly, else ERR10xx / gRPC status / CLIENT_CANCEL
    expected: bool = True
    finals: int = 0
    partials: int = 0
    lost: int = 0
    action_done: bool = False  # the cut or the stall happened
    stall_sec: float = 0.0
    audio_sec: float = 0.0

    @property
    def unexpected_code(self) -> str | None:
        if self.expected:
            return None
        if not self.created:
            return f"create:{self.code}"
        return self.code or "NO_" + str(EXPECTED_END[self.kind])


def count_lost(kind: str, finals: set[int], partial_only: set[int], unexpected: bool) -> int:
    """Finals lost in one stream (see the module docstring)."""
    gaps = {i for i in range(max(finals) + 1) if i not in finals} if finals else set()
    open_ = (partial_only | gaps) if kind in FINALS_KINDS else gaps
    if unexpected:
        return max(1, len(partial_only | gaps))
    return len(open_)


class Collector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[SessionRecord] = []
        self.open = 0

    def opened(self) -> None:
        with self._lock:
            self.open += 1

    def add(self, record: SessionRecord) -> None:
        with self._lock:
            self.records.append(record)
            self.open -= 1

    def counts(self) -> tuple[int, int, int, int, int]:
        """(sessions done, finals, unexpected errors, expected errors, open now)."""
        with self._lock:
            records, open_ = list(self.records), self.open
        return (len(records), sum(r.finals for r in records), sum(not r.expected for r in records),
                sum(r.expected and r.code is not None for r in records), open_)


@dataclass(frozen=True)
class Plan:
    files: list[Clip]
    action_at: int | None  # chunk index (over the whole stream, gaps included) of the cut or stall
    stall_sec: float = 0.0


class Worker:
    def __init__(self, index: int, args: argparse.Namespace, address: str, clips: list[Clip],
                 chunks: dict[str, list[bytes]], timeout_sec: float, started: float, deadline: float,
                 collector: Collector, shutdown: threading.Event, clients: list[SttClient],
                 lock: threading.Lock):
        self.index, self.args, self.address, self.clips, self.chunks = index, args, address, clips, chunks
        self.timeout_sec, self.started, self.deadline = timeout_sec, started, deadline
        self.collector, self.shutdown, self._clients, self._lock = collector, shutdown, clients, lock
        self.rng = random.Random(args.seed * 100_003 + index)
        self.kinds = list(args.mix)
        self.weights = [args.mix[k] for k in self.kinds]
        gap_bytes = 2 * max(1, round(SAMPLE_RATE_HZ * args.chunk_ms / 1000))
        self.gap = [bytes(gap_bytes)] * round(args.gap_sec * 1000 / args.chunk_ms)
        self.attributes = {"partial": "true"} if args.partials else {}
        self.client = self._new_client()
        self.seq = 0

    def _new_client(self) -> SttClient:
        client = SttClient(self.address)
        with self._lock:
            self._clients.append(client)
        return client

    def run(self) -> None:
        start_at = self.started + self.args.ramp_sec * self.index / max(1, self.args.streams)
        if self.shutdown.wait(max(0.0, start_at - time.monotonic())):
            return
        while time.monotonic() < self.deadline and not self.shutdown.is_set():
            kind = self.rng.choices(self.kinds, self.weights)[0]
            record = SessionRecord(self.index, self.seq, kind, started_sec=time.monotonic() - self.started)
            self.seq += 1
            self.collector.opened()
            try:
                self._session(record)
            finally:
                record.ended_sec = time.monotonic() - self.started
                self.collector.add(record)
            if not record.created:
                self.shutdown.wait(RETRY_AFTER_REFUSAL_SEC)

    def _plan(self, kind: str) -> Plan:
        files = [self.rng.choice(self.clips) for _ in range(self.rng.randint(1, 3))]
        if kind == "normal":
            return Plan(files, None)
        # The cut or stall falls inside one recording, 20-80 % into it: mid-utterance, most likely.
        which = self.rng.randrange(len(files))
        offset = sum(len(self.chunks[c.name]) + len(self.gap) for c in files[:which])
        n = len(self.chunks[files[which].name])
        at = offset + min(n - 1, int(n * self.rng.uniform(0.2, 0.8)))
        stall = 0.0
        if kind == "stall":
            stall = self.timeout_sec * self.rng.uniform(0.3, 0.6)
        elif kind == "stall_timeout":
            stall = self.timeout_sec + STALL_TIMEOUT_MARGIN_SEC
        return Plan(files, at, stall)

    def _session(self, record: SessionRecord) -> None:
        kind = record.kind
        client = self._new_client() if kind == "disconnect" else self.client
        try:
            session = client.create_session(vad_mode="continue", attributes=self.attributes)
        except SttError as err:
            record.code, record.expected = error_code(err), False
            return
        except ValueError:  # the channel was closed: the run is being cut at its hard deadline
            record.code, record.expected = "CLOSED", False
            return
        record.created = True
        if kind == "never_streamed":
            self.shutdown.wait(self.rng.uniform(1.0, 3.0))
            return
        plan = self._plan(kind)
        record.stall_sec = plan.stall_sec
        finals: set[int] = set()
        partials: set[int] = set()
        try:
            for result in client.send_chunks(session, self._audio(plan, record, client), SAMPLE_RATE_HZ,
                                             realtime=False):  # paced here: a stall shifts the schedule
                if result.is_final:
                    finals.add(result.utterance_index)
                    record.finals += 1
                else:
                    partials.add(result.utterance_index)
                    record.partials += 1
        except _ClientCancel:
            record.code = "CLIENT_CANCEL"
        except SttError as err:
            record.code = error_code(err)
        except ValueError as err:  # the SDK refused a chunk: a fault of this script
            record.code = f"CLIENT_ERROR({err})"
        finally:
            if kind == "disconnect":
                client.close()
        if record.code == "CANCELLED" and self.shutdown.is_set() and not (kind == "disconnect" and record.action_done):
            record.code = "CUT_AT_HARD_DEADLINE"
        record.expected = record.code == EXPECTED_END[kind] and (record.action_done or plan.action_at is None)
        record.lost = count_lost(kind, finals, partials - finals, unexpected=not record.expected)

    def _audio(self, plan: Plan, record: SessionRecord, client: SttClient) -> Iterator[bytes]:
        """The session's chunks at real-time pace; runs on the SDK's sender thread."""
        started = time.monotonic()
        sent_sec = 0.0  # audio sent; chunk k is due when its last sample would have been spoken
        index = 0
        for n, clip in enumerate(plan.files):
            if n and record.kind == "normal" and time.monotonic() >= self.deadline:
                return  # the load is over: half-close after the recording on hand
            record.files.append(clip.name)
            for piece in [*self.chunks[clip.name], *self.gap]:
                if index == plan.action_at:
                    record.action_done = True
                    if record.kind == "cancel":
                        raise _ClientCancel("cancelled by the client mid-stream")
                    if record.kind == "disconnect":
                        client.close()  # ends the call on this connection, then the connection
                        return
                    # A stall: nothing is sent; afterwards the pace restarts from here.
                    if self.shutdown.wait(plan.stall_sec):
                        return
                    started += plan.stall_sec
                sent_sec += len(piece) / 2 / SAMPLE_RATE_HZ
                wait = started + sent_sec - time.monotonic()
                if wait > 0 and self.shutdown.wait(wait):
                    return
                index += 1
                record.audio_sec = sent_sec
                yield piece


# --- server figures ------------------------------------------------------------------------------

def read_metrics(http_url: str, token: str) -> tuple[dict | None, str | None]:
    request = urllib.request.Request(http_url.rstrip("/") + "/metrics.json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read()), None
    except (urllib.error.URLError, OSError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


NOT_EXPOSED = "n/a (not exposed)"
LOST_SOURCE = "this run's sessions"


def _at(body: dict | None, *path: str) -> object:
    node: object = body
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def leak_figures(body: dict | None, lost: int) -> list[tuple[str, int | None, str]]:
    """(figure, value or None when not exposed, source) from a /metrics.json body; each value is expected 0."""
    def number(*path: str) -> int | None:
        value = _at(body, *path)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    streams = _at(body, "streams")
    streams = streams if isinstance(streams, list) else None
    by_key = _at(body, "sessions", "by_api_key")
    by_key = by_key if isinstance(by_key, dict) else None
    rows = [
        ("active sessions", number("sessions", "active"), "sessions.active"),
        ("streaming calls", number("sessions", "streaming"), "sessions.streaming"),
        ("VAD slots leased", number("vad_pool", "in_use"), "vad_pool.in_use"),
        ("buffered audio bytes", number("buffers", "total_bytes"), "buffers.total_bytes"),
        ("admission: client IPs with tickets", number("sessions", "client_ips"), "sessions.client_ips"),
        ("admission: tickets per client IP", None, "only the number of IPs holding tickets is exposed"),
        ("admission: tickets per API key", None if by_key is None else sum(by_key.values()),
         "sessions.by_api_key" if by_key is not None else "sessions.by_api_key absent "
                                                           "(metrics.expose_api_key_sessions off)"),
        ("decodes queued", number("decode", "queue_depth"), "decode.queue_depth"),
        ("decodes in flight", number("decode", "in_flight"), "decode.in_flight"),
        ("live streams", None if streams is None else len(streams), "len(streams)"),
        ("pending decodes of live streams", None if streams is None else
         sum(int(s.get("pending_decodes", 0)) for s in streams), "sum(streams[].pending_decodes)"),
    ]
    if body is None:
        rows = [(name, None, "/metrics.json unreadable") for name, _, _ in rows]
    return [*rows, ("finals lost (client side)", lost, LOST_SOURCE)]


def rss_slope_mb_per_hour(samples: list[tuple[float, float]], from_sec: float) -> float | None:
    """Least-squares slope of (seconds, MB) samples at or after from_sec, in MB per hour."""
    points = [(t, mb) for t, mb in samples if t >= from_sec]
    if len(points) < 2:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_mb = sum(mb for _, mb in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mean_t) * (mb - mean_mb) for t, mb in points)
    return cov / var * 3600.0


LOG_LEVEL_RE = re.compile(r"\s(ERROR|CRITICAL|WARNING)\s")  # the server logs "<time> <LEVEL> <logger>: ..."


def scan_server_log(text: str) -> dict:
    lines = text.splitlines()
    levels = [m.group(1) if (m := LOG_LEVEL_RE.search(line)) else None for line in lines]
    problems = [line for line, level in zip(lines, levels, strict=True)
                if level in ("ERROR", "CRITICAL") or line.startswith("Traceback ")]
    return {"lines": len(lines), "tracebacks": sum(line.startswith("Traceback ") for line in lines),
            "error_lines": sum(level in ("ERROR", "CRITICAL") for level in levels),
            "warning_lines": levels.count("WARNING"), "first": problems[:10]}


def _mmss(sec: float) -> str:
    return f"{int(sec // 60)}:{int(sec % 60):02d}"


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


# --- the run -------------------------------------------------------------------------------------

def kind_table(records: list[SessionRecord]) -> list[dict]:
    rows = []
    for kind in KINDS:
        mine = [r for r in records if r.kind == kind]
        unexpected = Counter(r.unexpected_code for r in mine if not r.expected)
        rows.append({"kind": kind, "sessions": len(mine), "finals": sum(r.finals for r in mine),
                     "partials": sum(r.partials for r in mine), "expected": sum(r.expected for r in mine),
                     "unexpected": dict(sorted(unexpected.items())), "lost": sum(r.lost for r in mine)})
    return rows


def format_kind_table(rows: list[dict]) -> list[str]:
    lines = [f"{'kind':<15}{'sessions':>9}{'finals':>8}{'partials':>9}{'expected':>9}{'lost':>6}  unexpected"]
    for row in rows:
        unexpected = ", ".join(f"{code} x{n}" for code, n in row["unexpected"].items()) or "-"
        lines.append(f"{row['kind']:<15}{row['sessions']:>9}{row['finals']:>8}{row['partials']:>9}"
                     f"{row['expected']:>9}{row['lost']:>6}  {unexpected}")
    total = {k: sum(r[k] for r in rows) for k in ("sessions", "finals", "partials", "expected", "lost")}
    n_unexpected = sum(sum(r["unexpected"].values()) for r in rows)
    lines.append(f"{'total':<15}{total['sessions']:>9}{total['finals']:>8}{total['partials']:>9}"
                 f"{total['expected']:>9}{total['lost']:>6}  {n_unexpected}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.streams is None:
            if args.capacity < 1:
                raise UsageError("--capacity must be >= 1")
            args.streams = max(1, round(LOAD_SHARE * args.capacity))
        if args.streams < 1 or args.minutes <= 0 or args.sample_sec <= 0 or args.report_sec <= 0:
            raise UsageError("--streams, --minutes, --sample-sec and --report-sec must be > 0")
        if args.chunk_ms <= 0 or args.gap_sec < 0 or args.ramp_sec < 0:
            raise UsageError("--chunk-ms must be > 0, --gap-sec and --ramp-sec >= 0")
        if args.server and not args.http_url:
            raise UsageError("--server needs --http-url (the leaks are read from its /metrics.json)")
        paths = find_audio(args.audio) if args.audio else default_audio()
        clips, skipped = load_clips(paths, args.max_file_sec or None)
        if not clips:
            raise UsageError("no usable audio: pass --audio FILE_OR_DIR")
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if skipped:
        print(f"skipped (longer than --max-file-sec): {', '.join(skipped)}", file=sys.stderr)
    timeout_sec, timeout_from = session_timeout(args)
    settle_sec = args.settle_sec if args.settle_sec is not None else timeout_sec + 5.0
    http_url = args.http_url or prepare_own_server(args)
    chunks = {clip.name: split_pcm16(clip.pcm16, SAMPLE_RATE_HZ, args.chunk_ms) for clip in clips}
    load_sec = args.minutes * 60.0
    mix = ", ".join(f"{k} {v:g}" for k, v in args.mix.items() if v)

    try:
        with target_server(args) as target:
            print(f"soak: {args.minutes:g} min, {args.streams} streams, {len(clips)} files, partials "
                  f"{'on' if args.partials else 'off'}, seed {args.seed}; mix {mix}", flush=True)
            print(f"server {target.address} (pid {target.pid or 'n/a'}), HTTP {http_url}; session timeout "
                  f"{timeout_sec:g} s ({timeout_from}); settle {settle_sec:g} s", flush=True)
            result = run_soak(args, target, clips, chunks, timeout_sec, load_sec, settle_sec, http_url)
            log_text = target.log() if callable(target.log) else None
            log_scan = scan_server_log(log_text) if log_text is not None else None
            if args.server_log and log_text is not None:
                Path(args.server_log).write_text(log_text, encoding="utf-8")
    except (RuntimeError, TimeoutError) as err:
        print(f"error: the server did not start: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return report(args, result, log_scan, load_sec, settle_sec)


def run_soak(args, target, clips, chunks, timeout_sec, load_sec, settle_sec, http_url) -> dict:
    collector, shutdown = Collector(), threading.Event()
    clients: list[SttClient] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + load_sec
    longest = max(c.duration_sec for c in clips) + args.gap_sec
    hard_deadline = deadline + 3 * longest + timeout_sec + 60.0  # then open streams are cut
    workers = [Worker(i, args, target.address, clips, chunks, timeout_sec, started, deadline, collector,
                      shutdown, clients, lock) for i in range(args.streams)]
    threads = [threading.Thread(target=w.run, name=f"soak-{w.index}", daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    next_sample, next_report = started, started + args.report_sec
    cut = False

    def sample(now: float) -> float | None:
        reading = read_sample(target.pid) if target.pid else None
        if reading is None:
            return None
        samples.append((now - started, reading.rss_bytes / MB))
        return samples[-1][1]

    try:
        while any(t.is_alive() for t in threads):
            wake = min(next_sample, next_report)
            for thread in threads:
                thread.join(timeout=max(0.0, wake - time.monotonic()))
            now = time.monotonic()
            if now >= next_sample:
                sample(now)
                next_sample += args.sample_sec
            if now >= next_report:
                done, finals, unexpected, expected, open_ = collector.counts()
                rss = samples[-1][1] if samples else None
                print(f"[{_mmss(now - started)}] RSS {_mb(rss)} MB | sessions {done} done, {open_} open | "
                      f"finals {finals} | errors {unexpected} unexpected, {expected} expected", flush=True)
                next_report += args.report_sec
            if not cut and now > hard_deadline:
                cut = True
                shutdown.set()
                with lock:
                    for client in clients:
                        client.close()
    finally:
        shutdown.set()
        with lock:
            for client in clients:
                client.close()
    load_end = time.monotonic() - started
    load_samples = list(samples)
    print(f"[{_mmss(load_end)}] load over: every worker stopped; settling {settle_sec:g} s", flush=True)
    settle_until = time.monotonic() + settle_sec
    while time.monotonic() < settle_until:
        time.sleep(min(args.sample_sec, max(0.0, settle_until - time.monotonic())))
        sample(time.monotonic())
    after_settle = samples[-1][1] if len(samples) > len(load_samples) else None
    first_read, first_error = read_metrics(http_url, args.http_token)
    time.sleep(0.5)
    body, error = read_metrics(http_url, args.http_token)
    if body is None and first_read is not None:
        body, error = first_read, None
    return {"records": collector.records, "samples": samples, "load_samples": load_samples,
            "load_wall_sec": load_end, "after_settle_mb": after_settle, "cut_at_hard_deadline": cut,
            "metrics": body, "metrics_error": error or first_error, "metrics_first_read": first_read,
            "pid": target.pid, "timeout_sec": timeout_sec}


def report(args, result: dict, log_scan: dict | None, load_sec: float, settle_sec: float) -> int:
    records: list[SessionRecord] = result["records"]
    rows = kind_table(records)
    lost = sum(r.lost for r in records)
    unexpected = sum(not r.expected for r in records)
    print()
    print(f"sessions by kind (load {result['load_wall_sec']:.0f} s, {args.streams} streams):")
    for line in format_kind_table(rows):
        print("  " + line)

    load_samples = result["load_samples"]
    rss = [mb for _, mb in load_samples]
    slope = rss_slope_mb_per_hour(load_samples, WARMUP_SHARE * load_sec)
    if rss:
        print(f"server RSS: first {rss[0]:.1f} MB, last {rss[-1]:.1f} MB, peak {max(rss):.1f} MB over "
              f"{len(rss)} samples; after settle {_mb(result['after_settle_mb'])} MB; slope after "
              f"{WARMUP_SHARE:.0%} warm-up: " + ("n/a (too few samples)" if slope is None else f"{slope:+.1f} MB/hour"))
    else:
        print("server RSS: n/a (no pid to sample: pass --server-pid with --server)")

    body = result["metrics"]
    figures = leak_figures(body, lost)
    print(f"leaks after the {settle_sec:g} s settle (/metrics.json, second read; each expected 0):")
    if body is None:
        print(f"  /metrics.json unreadable: {result['metrics_error']}")
    leaks, not_exposed = [], []
    for name, value, source in figures:
        if value is None:
            shown = NOT_EXPOSED if body is not None else "n/a (unreadable)"
            not_exposed.append(name)
        else:
            shown = f"{value:g}"
            if value and source != LOST_SOURCE:
                leaks.append(f"{name} {value:g}")
        print(f"  {name:<36}{shown:<20}  [{source}]")
    first = result["metrics_first_read"]
    if first is not None and body is not None and first is not body:
        changed = [f"{name} {a:g} -> {b:g}" for (name, a, _), (_, b, _) in
                   zip(leak_figures(first, lost), figures, strict=True)
                   if a is not None and b is not None and a != b]
        if changed:
            print("  note: the first read differed (never-streamed sessions expire lazily, when the registry "
                  "is next touched; that read's own session count touched it): " + "; ".join(changed))
    if body is not None:
        decode, totals = body.get("decode", {}), body.get("totals", {})
        print(f"  server totals: sessions created {totals.get('sessions_created')}, errors by code "
              f"{totals.get('errors_by_code')}, decode failures {decode.get('failures')}, finals timed out "
              f"{decode.get('finals_timed_out')}, partials dropped {decode.get('partials_dropped')}")
    if log_scan is not None:
        print(f"server log: {log_scan['lines']} lines, {log_scan['tracebacks']} tracebacks, "
              f"{log_scan['error_lines']} ERROR/CRITICAL lines, {log_scan['warning_lines']} WARNING lines")
        for line in log_scan["first"]:
            print(f"  | {line[:200]}")

    failures = []
    if leaks:
        failures.append("leak: " + ", ".join(leaks))
    if lost:
        failures.append(f"{lost} finals lost")
    if unexpected:
        failures.append(f"{unexpected} unexpected errors")
    if result["cut_at_hard_deadline"]:
        failures.append("streams still open at the hard deadline were cut")
    if args.rss_slope_limit is not None and slope is not None and slope > args.rss_slope_limit:
        failures.append(f"RSS slope {slope:+.1f} MB/hour > {args.rss_slope_limit:g}")
    if body is None:
        failures.append("leaks unknown: /metrics.json unreadable")
    print("verdict: " + ("no leak, no lost final" if not failures else "FAIL: " + "; ".join(failures)))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "minutes": args.minutes, "streams": args.streams, "seed": args.seed, "mix": args.mix,
            "partials": args.partials, "session_timeout_sec": result["timeout_sec"], "settle_sec": settle_sec,
            "load_wall_sec": result["load_wall_sec"], "kinds": rows, "finals_lost": lost,
            "unexpected_errors": unexpected,
            "rss": {"samples": result["samples"], "first_mb": rss[0] if rss else None,
                    "last_mb": rss[-1] if rss else None, "peak_mb": max(rss) if rss else None,
                    "after_settle_mb": result["after_settle_mb"], "slope_mb_per_hour": slope},
            "leaks": [{"figure": n, "value": v, "source": s} for n, v, s in figures], "not_exposed": not_exposed,
            "metrics_json": body, "metrics_json_first_read": result["metrics_first_read"],
            "server_log": log_scan, "failures": failures,
            "sessions": [asdict(r) for r in records]}, indent=2) + "\n", encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
