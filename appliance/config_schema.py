"""The configuration schema: one frozen dataclass per YAML section, field names = YAML keys.

Each field's metadata carries its help text and validation rules (ge, gt, le, choices, upper,
nonempty); `appliance.config` loads, layers and checks values against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.decode_options import DecodeOptions

BACKENDS = ("faster_whisper", "torch_whisper")
DEVICES = ("cpu", "cuda", "mps", "auto")
COMPUTE_TYPES = ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "float16", "bfloat16",
                 "float32", "default")
TASKS = ("transcribe", "translate")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AUTH_PROFILES = ("none", "api_key", "signed_token")
ENCODE_WINDOWS = ("full", "bucketed", "partials")
PORT = {"ge": 0, "le": 65535}
RATIO = {"ge": 0, "le": 1}


def _opt(default: Any, help: str, *, factory: Any = None, **rules: Any) -> Any:
    """A dataclass field with its help text and validation rules (ge, gt, le, choices, upper, nonempty)."""
    meta = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    port: int = _opt(50051, "gRPC listen port", **PORT)
    grpc_host: str = _opt("0.0.0.0", "gRPC bind address", nonempty=True)
    http_host: str = _opt("127.0.0.1", "HTTP metrics/health bind host", nonempty=True)
    max_sessions: int = _opt(50, "concurrent gRPC sessions", ge=1)
    metrics_port: int = _opt(8000, "HTTP metrics/health port", **PORT)
    grpc_worker_threads: int = _opt(0, "gRPC thread pool size (0 = auto)", ge=0)
    create_session_rps: float = _opt(50.0, "CreateSession requests/sec (0 disables)", ge=0)
    create_session_burst: float = _opt(100.0, "CreateSession burst tokens (0 uses rps)", ge=0)
    max_sessions_per_ip: int = _opt(100, "concurrent sessions per client IP (0 disables)", ge=0)
    max_sessions_per_api_key: int = _opt(100, "concurrent sessions per api_key (0 disables)", ge=0)
    max_audio_seconds_per_session: float = _opt(3600.0, "audio seconds per session (0 disables)", ge=0)
    max_audio_bytes_per_sec: int = _opt(3200000, "inbound audio bytes/sec per key (0 disables)", ge=0)
    max_audio_bytes_per_sec_burst: int = _opt(6400000, "audio byte burst (0 uses bytes/sec)", ge=0)
    max_audio_bytes_per_sec_realtime: int | None = _opt(None, "realtime-mode bytes/sec (null = base)", ge=0)
    max_audio_bytes_per_sec_burst_realtime: int | None = _opt(None, "realtime-mode burst (null = base)", ge=0)
    max_audio_bytes_per_sec_batch: int | None = _opt(0, "batch-mode bytes/sec (null = base, 0 disables)", ge=0)
    max_audio_bytes_per_sec_burst_batch: int | None = _opt(0, "batch-mode burst (null = base)", ge=0)
    http_rate_limit_rps: float = _opt(5.0, "HTTP requests/sec per client (0 disables)", ge=0)
    http_rate_limit_burst: float = _opt(10.0, "HTTP burst tokens (0 uses rps)", ge=0)
    http_trusted_proxies: list[str] = _opt(None, "trusted proxy CIDRs/hostnames for X-Forwarded-For",
                                           factory=list, nonempty=True)
    decode_timeout_sec: float = _opt(30.0, "wait for pending decodes while draining (<= 0 waits forever)")
    log_metrics: bool = _opt(False, "log decode latency and real-time factor per decode")
    session_timeout_sec: float = _opt(60.0, "seconds of inactivity before a session is aborted", gt=0)
    max_buffer_sec: float | None = _opt(20.0, "per-session buffered audio seconds (null disables)", gt=0)
    max_buffer_bytes: int | None = _opt(None, "per-session buffered audio bytes (null disables)", ge=1)
    max_chunk_ms: int | None = _opt(2000, "longest single audio chunk in ms (null disables)", ge=1)
    partial_decode_interval_sec: float | None = _opt(1.5, "partial decode cadence (null disables)", gt=0)
    partial_decode_window_sec: float = _opt(10.0, "audio window of a partial decode (seconds)", gt=0)
    emit_final_on_vad: bool = _opt(True, "each VAD endpoint ends the utterance with a final result")
    max_pending_decodes_per_stream: int = _opt(8, "queued decodes per stream before partials drop", ge=1)
    max_pending_decodes_global: int = _opt(512, "queued decodes in total before backpressure", ge=1)
    max_total_buffer_bytes: int = _opt(268435456, "buffered audio bytes across all sessions", ge=1)
    decode_queue_timeout_sec: float = _opt(5.0, "seconds a final waits for a decode slot (0 = no limit)", ge=0)
    decode_batch_window_ms: float = _opt(0.0, "decode batching window in ms (0 disables)", ge=0)
    max_decode_batch_size: int = _opt(8, "decode tasks per batch (1 disables)", ge=1)
    buffer_overlap_sec: float = _opt(0.0, "audio before a buffer-cap cut repeated in the next utterance (seconds)", ge=0)
    grpc_max_receive_message_bytes: int = _opt(8388608, "largest inbound gRPC message (bytes)", ge=1)
    grpc_max_send_message_bytes: int = _opt(4194304, "largest outbound gRPC message (bytes)", ge=1)
    sample_rate: int = _opt(16000, "sample rate (Hz) assumed when a chunk omits it", ge=1)
    memory_budget_bytes: int | None = _opt(
        None, "process memory budget (bytes); null = the cgroup memory limit when set, 0 = none", ge=0)
    memory_per_session_bytes: int = _opt(
        4194304, "memory reserved per new session when checking the budget (bytes)", ge=0)
    partial_skip_unchanged: bool = _opt(True, "skip a partial decode when no speech arrived since the last one")


@dataclass(frozen=True)
class VadConfig:
    silence: float = _opt(0.5, "trailing silence (seconds) that ends an utterance", gt=0)
    threshold: float = _opt(0.5, "Silero VAD speech probability threshold (0-1)", **RATIO)
    model_pool_size: int = _opt(4, "VAD model pool size (0 uses server.max_sessions)", ge=0)
    model_prewarm: int = _opt(1, "VAD models created at startup", ge=0)
    model_pool_growth_factor: float = _opt(1.5, "VAD pool growth factor on demand", ge=1)


@dataclass(frozen=True)
class SafetyConfig:
    speech_rms_threshold: float = _opt(0.0, "minimum RMS (0-1 full scale) for audio to count as speech",
                                       **RATIO)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _opt("INFO", "log level", choices=LOG_LEVELS, upper=True)
    file: str | None = _opt(None, "log file path (null = console only)", nonempty=True)
    faster_whisper_level: str | None = _opt(None, "faster_whisper logger level (null = WARNING)",
                                            choices=LOG_LEVELS, upper=True)
    log_transcripts: bool = _opt(False, "write transcript text to transcript_file (PII)")
    transcript_file: str | None = _opt(None, "dedicated transcript log file", nonempty=True)
    transcript_retention_days: float = _opt(7.0, "days transcript logs are kept", gt=0)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str | None = _opt(None, "TLS certificate chain (PEM) for gRPC", nonempty=True)
    key_file: str | None = _opt(None, "TLS private key (PEM) for gRPC", nonempty=True)
    required: bool = _opt(False, "refuse to start without cert_file and key_file")


@dataclass(frozen=True)
class MetricsConfig:
    expose_api_key_sessions: bool = _opt(False, "include active_sessions_by_api in /metrics")


@dataclass(frozen=True)
class AuthConfig:
    require_api_key: bool = _opt(False, "require an api_key attribute on CreateSession")
    create_session_auth_profile: str = _opt("none", "CreateSession auth", choices=AUTH_PROFILES)
    create_session_auth_secret: str = _opt("", "HMAC secret of the signed_token profile")
    create_session_auth_ttl_sec: float = _opt(0.0, "signed token TTL / clock skew seconds (0 disables)",
                                              ge=0)


@dataclass(frozen=True)
class StorageConfig:
    persist_audio: bool = _opt(False, "save session audio to directory")
    directory: str = _opt("data/audio", "where persisted audio goes", nonempty=True)
    queue_max_chunks: int = _opt(256, "queued PCM chunks before the oldest is dropped", ge=1)
    max_bytes: int | None = _opt(None, "byte cap of the directory (null = none)", ge=1)
    max_files: int | None = _opt(None, "file-count cap (null = none)", ge=1)
    max_age_days: float | None = _opt(None, "retention in days (null = forever)", gt=0)


@dataclass(frozen=True)
class HealthConfig:
    window_sec: float = _opt(60.0, "rolling window of decode health (seconds)", gt=0)
    min_events: int = _opt(5, "decodes in the window before ratios are judged", ge=0)
    max_timeout_ratio: float = _opt(0.5, "degraded above this decode timeout ratio", **RATIO)
    min_success_ratio: float = _opt(0.5, "degraded below this decode success ratio", **RATIO)


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt("tiny.en", "Whisper model name or path", nonempty=True)
    backend: str = _opt("faster_whisper", "decode backend", choices=BACKENDS)
    device: str = _opt("cpu", "compute device", choices=DEVICES)
    compute_type: str = _opt("default", "weight/compute precision (default: the load profile's)",
                             choices=COMPUTE_TYPES)
    pool_size: int = _opt(1, "preloaded model instances", ge=1)
    language_fix: bool = _opt(False, "always decode in `language`")
    language: str = _opt("", "language code (empty = auto-detect)")
    languages: list[str] | None = _opt(None, "languages to force (repeat to weight; null = auto)",
                                       nonempty=True)
    task: str = _opt("transcribe", "transcribe or translate to English", choices=TASKS)
    default_decode_profile: str = _opt("realtime", "decode profile used when a session names none",
                                       nonempty=True)
    default_model_load_profile: str = _opt("default", "load profile of /admin/load_model", nonempty=True)
    profile: str = _opt("auto", "load profile at boot: auto (detect hardware) or a profile name",
                        nonempty=True)
    cpu_threads: int = _opt(0, "CPU threads per model instance (0 = auto: the usable cores split over pool_size)", ge=0)
    model_dir: str | None = _opt(None, "local CTranslate2 model directory (overrides name)", nonempty=True)
    encode_window: str = _opt("bucketed", "encoder input: bucketed lengths or the full 30 s window",
                              choices=ENCODE_WINDOWS)


@dataclass(frozen=True)
class ModelLoadProfile:
    model_size: str = _opt("tiny.en", "model name or path", nonempty=True)
    backend: str = _opt("faster_whisper", "decode backend", choices=BACKENDS)
    device: str = _opt("cpu", "compute device", choices=DEVICES)
    compute_type: str = _opt("default", "weight/compute precision (default: the backend's choice)",
                             choices=COMPUTE_TYPES)
    pool_size: int = _opt(1, "preloaded model instances", ge=1)


def _default_load_profiles() -> dict[str, ModelLoadProfile]:
    return {"default": ModelLoadProfile()}


def _default_decode_profiles() -> dict[str, DecodeOptions]:
    return {"realtime": DecodeOptions(), "accurate": DecodeOptions(beam_size=5, best_of=5)}
