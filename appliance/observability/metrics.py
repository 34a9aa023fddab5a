"""Prometheus metrics and the recent-latency record the status page draws.

Events (a decode finished, a result went out, an error was returned) update counters and histograms
as they happen: an observe() is a few hundred nanoseconds, cheap enough for the hot path. Levels
(sessions, queue depth, buffered bytes, RSS, loaded models) are read from a runtime snapshot at
scrape time by `SnapshotCollector`, so nothing polls and nothing can drift.

Each appliance owns its registry (no process-global state), so several runtimes in one test process
never see each other's numbers. Names follow Prometheus conventions: `stt_` prefix, base units in
the name (`_seconds`, `_bytes`), `_total` for counters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily

from appliance.observability.snapshot import StatusSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
RECENT_FINALS = 240  # points kept for the status page's latency chart


class RecentFinals:
    """The last few hundred finals' (unix time, latency, rtf): what the status page charts."""

    def __init__(self, maxlen: int = RECENT_FINALS):
        self._points: deque[tuple[float, float, float]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, latency_sec: float, rtf: float) -> None:
        with self._lock:
            self._points.append((time.time(), latency_sec, rtf))

    def summary(self) -> dict:
        with self._lock:
            points = list(self._points)
        latencies = sorted(p[1] for p in points)
        rtfs = sorted(p[2] for p in points)
        return {
            "count": len(points),
            "final_latency_p50_sec": _quantile(latencies, 0.5),
            "final_latency_p95_sec": _quantile(latencies, 0.95),
            "rtf_p50": _quantile(rtfs, 0.5),
            "points": [{"t": round(t, 3), "latency_sec": round(lat, 4), "rtf": round(rtf, 4)}
                       for t, lat, rtf in points],
        }


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class ApplianceMetrics:
    """The appliance's metrics on `registry` (one per appliance: tests run several side by side)."""

    def __init__(self, registry: CollectorRegistry, snapshot: Callable[[], StatusSnapshot] | None = None):
        self.registry = registry
        r = registry
        self.decode_seconds = Histogram("stt_decode_seconds", "Wall time of one decode call (a batch counts once)",
                                        ["kind"], buckets=_LATENCY_BUCKETS, registry=r)
        self.decode_queue_wait_seconds = Histogram(
            "stt_decode_queue_wait_seconds", "Time a decode waited for a model slot", ["kind"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.decode_rtf = Histogram("stt_decode_rtf", "Real-time factor of a decode (decode seconds / audio seconds)",
                                    ["kind"], buckets=_RTF_BUCKETS, registry=r)
        self.final_latency_seconds = Histogram(
            "stt_final_latency_seconds", "From the end of an utterance (endpoint, cut or end of stream) to its "
            "final result leaving the server", buckets=_LATENCY_BUCKETS, registry=r)
        self.decodes_total = Counter("stt_decodes_total", "Decode requests by kind and outcome",
                                     ["kind", "outcome"], registry=r)
        self.decoded_audio_seconds_total = Counter("stt_decoded_audio_seconds_total", "Audio seconds decoded",
                                                   ["kind"], registry=r)
        self.partials_dropped_total = Counter("stt_partials_dropped_total",
                                              "Partial decodes skipped under load", registry=r)
        self.results_total = Counter("stt_results_total", "Results sent to clients", ["kind"], registry=r)
        self.sessions_created_total = Counter("stt_sessions_created_total", "Sessions admitted", registry=r)
        self.sessions_by_protocol_total = Counter("stt_sessions_by_protocol_total",
                                                  "Sessions admitted, by protocol (grpc, wyoming, openai)",
                                                  ["protocol"], registry=r)
        self.errors_total = Counter("stt_errors_total", "Errors returned to clients, by stable code and where",
                                    ["code", "stage"], registry=r)
        self.http_requests_total = Counter("stt_http_requests_total", "HTTP requests by route and status class",
                                           ["route", "status"], registry=r)
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        if snapshot is not None:
            r.register(SnapshotCollector(snapshot))
        self.recent_finals = RecentFinals()
        self._errors_by_code: Tally[str] = Tally()
        self._sessions_created = 0

    # --- events -------------------------------------------------------------------------------

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None:
        kind = "final" if is_final else "partial"
        self.decodes_total.labels(kind, "success").inc()
        self.decode_seconds.labels(kind).observe(decode_sec)
        self.decode_queue_wait_seconds.labels(kind).observe(max(0.0, wait_sec))
        self.decoded_audio_seconds_total.labels(kind).inc(audio_sec)
        if audio_sec > 0:
            self.decode_rtf.labels(kind).observe(decode_sec / audio_sec)

    def decode_failed(self, *, is_final: bool, outcome: str) -> None:
        self.decodes_total.labels("final" if is_final else "partial", outcome).inc()

    def partials_dropped(self, count: int = 1) -> None:
        self.partials_dropped_total.inc(count)

    def result_sent(self, *, is_final: bool, latency_sec: float | None, rtf: float | None) -> None:
        self.results_total.labels("final" if is_final else "partial").inc()
        if is_final and latency_sec is not None:
            self.final_latency_seconds.observe(latency_sec)
            self.recent_finals.add(latency_sec, rtf or 0.0)

    def session_created(self, protocol: str = "grpc") -> None:
        self.sessions_created_total.inc()
        self.sessions_by_protocol_total.labels(protocol).inc()
        self._sessions_created += 1

    def error(self, code: str, stage: str) -> None:
        self.errors_total.labels(code, stage).inc()
        self._errors_by_code[code] += 1

    def totals(self) -> dict:
        """Counters for /metrics.json (Prometheus has them with labels)."""
        return {"sessions_created": self._sessions_created,
                "errors_by_code": dict(sorted(self._errors_by_code.items()))}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class SnapshotCollector:
    """Gauges read from the status snapshot at scrape time."""

    def __init__(self, snapshot: Callable[[], StatusSnapshot]):
        self._snapshot = snapshot

    def describe(self):
        return []  # levels depend on the snapshot; nothing to pre-register

    def collect(self):
        s = self._snapshot()
        yield _gauge("stt_up", "1 when the appliance is serving and healthy", 1.0 if s.health == "ok" else 0.0)
        state = GaugeMetricFamily("stt_lifecycle_state", "1 for the current lifecycle state", labels=["state"])
        for name in ("starting", "serving", "draining", "stopped"):
            state.add_metric([name], 1.0 if s.state == name else 0.0)
        yield state
        sessions = s.sessions
        yield _gauge("stt_active_sessions", "Sessions created and not yet ended", sessions.active)
        yield _gauge("stt_active_streams", "StreamingRecognize calls in progress", sessions.streaming)
        yield _gauge("stt_session_capacity", "server.max_sessions", sessions.max)
        if sessions.by_api_key is not None:  # metrics.expose_api_key_sessions: keys are hashed, never shown
            by_key = GaugeMetricFamily("stt_active_sessions_by_api", "Active sessions per api_key (sha256 prefix)",
                                       labels=["api_key_hash"])
            for key_hash, count in sorted(sessions.by_api_key.items()):
                by_key.add_metric([key_hash], count)
            yield by_key
        d = s.decode
        yield _gauge("stt_decode_queue_depth", "Decode requests waiting for a model slot", d.queue_depth)
        yield _gauge("stt_decodes_in_flight", "Decode calls running", d.in_flight)
        yield _gauge("stt_decode_slots", "Model slots (model.pool_size)", d.slots)
        b = s.buffers
        yield _gauge("stt_buffered_audio_bytes", "Audio buffered across all streams (16 kHz PCM16)", b.total_bytes)
        if b.cap_bytes:
            yield _gauge("stt_buffered_audio_limit_bytes", "server.max_total_buffer_bytes", b.cap_bytes)
        m = s.memory
        yield _gauge("stt_memory_rss_bytes", "Resident set size of the appliance", m.rss_bytes)
        if m.budget_bytes:
            yield _gauge("stt_memory_budget_bytes", "Memory budget new sessions are checked against", m.budget_bytes)
        v = s.vad_pool
        yield _gauge("stt_vad_slots", "VAD pool slots created", v.slots)
        yield _gauge("stt_vad_slots_in_use", "VAD pool slots leased to streams", v.in_use)
        loaded = GaugeMetricFamily("stt_model_loaded", "1 per loaded model", labels=["model_id", "backend", "device"])
        model_sessions = GaugeMetricFamily("stt_model_active_sessions", "Streams using a model", labels=["model_id"])
        for model in s.models:
            loaded.add_metric([model["model_id"], model["backend"], model["device"]], 1.0)
            model_sessions.add_metric([model["model_id"]], model["active_sessions"])
        yield loaded
        yield model_sessions
        yield _gauge("stt_uptime_seconds", "Seconds since the appliance started", s.uptime_sec)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))
