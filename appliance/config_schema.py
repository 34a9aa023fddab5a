"""The configuration schema: one frozen dataclass per YAML section, field names = YAML keys.

Each field is a `setting(...)` carrying its help text and validation rules (ge, gt, le, choices,
upper, nonempty), checked by `appliance.fields` as the decode options are; `appliance.config`
loads, layers and checks values against them. Also here, below every other config module:
`ConfigError`, the section table (`SECTIONS`, `section_fields`) and the removed keys an older file
may still hold (`DEPRECATED_KEYS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.decode_options import DECODE_OPTION_NAMES, DecodeOptions
from appliance.fields import FieldSpec, SettingError, field_specs, setting

BACKENDS = ("faster_whisper", "torch_whisper")
DEVICES = ("cpu", "cuda", "mps", "auto")
COMPUTE_TYPES = ("int8", "int8_float16", "int8_float32", "int8_bfloat16", "float16", "bfloat16",
                 "float32", "default")
TASKS = ("transcribe", "translate")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
AUTH_PROFILES = ("none", "api_key", "signed_token")
ENCODE_WINDOWS = ("full", "bucketed", "partials")
PLAINTEXT_POLICIES = ("loopback", "any", "never")
SPECULATIVE_FINALS = ("auto", "always", "never")
PORT = {"ge": 0, "le": 65535}
RATIO = {"ge": 0, "le": 1}


@dataclass(frozen=True)
class ServerConfig:
    port: int = setting(50051, "gRPC listen port", **PORT)
    grpc_host: str = setting("0.0.0.0", "gRPC bind address", nonempty=True)
    http_host: str = setting("127.0.0.1", "HTTP bind address ('*' = all, or a comma-separated list)", nonempty=True)
    max_sessions: int = setting(50, "concurrent gRPC sessions", ge=1)
    metrics_port: int = setting(8000, "HTTP port of the operator plane (/health, /metrics, admin)", **PORT)
    create_session_rps: float = setting(50.0, "CreateSession requests/sec (0 disables)", ge=0)
    create_session_burst: float = setting(100.0, "CreateSession burst tokens (0 uses rps)", ge=0)
    # Below max_sessions, so one host on the LAN cannot hold every slot.
    max_sessions_per_ip: int = setting(16, "concurrent sessions per client IP (0 disables)", ge=0)
    max_sessions_per_api_key: int = setting(100, "concurrent sessions per api_key (0 disables)", ge=0)
    max_audio_seconds_per_session: float = setting(3600.0, "audio seconds per session (0 disables)", ge=0)
    max_audio_bytes_per_sec: int = setting(3200000, "inbound audio bytes/sec per key (0 disables)", ge=0)
    max_audio_bytes_per_sec_burst: int = setting(6400000, "audio byte burst (0 uses bytes/sec)", ge=0)
    max_audio_bytes_per_sec_realtime: int | None = setting(None, "realtime-mode bytes/sec (null = base)", ge=0)
    max_audio_bytes_per_sec_burst_realtime: int | None = setting(None, "realtime-mode burst (null = base)", ge=0)
    max_audio_bytes_per_sec_batch: int | None = setting(
        1000000, "batch-mode bytes/sec (null = base, 0 disables)", ge=0)
    max_audio_bytes_per_sec_burst_batch: int | None = setting(
        16000000, "batch-mode burst (null = base, 0 uses the batch rate)", ge=0)
    max_batch_upload_bytes: int = setting(67108864, "audio bytes one batch session may send (0 disables)", ge=0)
    http_rate_limit_rps: float = setting(5.0, "HTTP requests/sec per client (0 disables)", ge=0)
    http_rate_limit_burst: float = setting(10.0, "HTTP burst tokens (0 uses rps)", ge=0)
    http_trusted_proxies: list[str] = setting(None, "trusted proxy CIDRs/hostnames for X-Forwarded-For",
                                           factory=list, nonempty=True)
    # The operator plane (/health, /metrics, admin): its slots are its own, and no address holds them all.
    http_max_connections: int = setting(32, "open connections to the operator plane (HTTP on metrics_port)",
                                        ge=2, le=1024)
    http_max_connections_per_address: int = setting(
        8, "open operator-plane connections per client address (0 disables; held below the total)", ge=0)
    http_header_timeout_sec: float = setting(
        10.0, "seconds a connection may take to send a complete request (a byte now and then does not count)",
        gt=0, le=300)
    decode_timeout_sec: float = setting(30.0, "wait for pending decodes while draining (<= 0 waits forever)")
    log_metrics: bool = setting(False, "log decode latency and real-time factor per decode")
    session_timeout_sec: float = setting(
        60.0, "seconds without speech (or without any chunk) before a stream is ended", gt=0)
    first_chunk_timeout_sec: float = setting(10.0, "seconds a new stream may take to send its first chunk", gt=0)
    resume_window_sec: float = setting(
        30.0, "how long a resume ticket (on finals and checkpoints) lets a dropped stream re-attach", gt=0, le=3600)
    drain_notice_sec: float = setting(
        0.0, "on SIGTERM, seconds /health and gRPC health report draining while sessions are still taken, "
        "so a load balancer's check moves traffic first (0: drain at once)", ge=0, le=300)
    node_name: str = setting("", "this node's name in the stt-node response header (empty: the hostname)")
    max_open_streams: int | None = setting(
        None, "open StreamingRecognize calls, attached or not (null = 2 x max_sessions)", ge=1)
    max_chunks_per_sec: float = setting(100.0, "audio chunks per second per stream, 2 s burst (0 disables)", ge=0)
    max_buffer_sec: float | None = setting(20.0, "per-session buffered audio seconds (null disables)", gt=0)
    max_buffer_bytes: int | None = setting(None, "per-session buffered audio bytes (null disables)", ge=1)
    max_chunk_ms: int | None = setting(2000, "longest single audio chunk in ms (null disables)", ge=1)
    partial_decode_interval_sec: float | None = setting(
        0.5, "partial decode cadence while the decoders have spare capacity (null disables partials)", gt=0)
    partial_decode_interval_max_sec: float | None = setting(
        3.0, "partial decode cadence with every decode slot busy; it stretches toward this as the load "
        "rises (null: a fixed cadence)", gt=0)
    partial_first_decode_sec: float | None = setting(
        0.5, "speech after an utterance's onset before its first partial, with spare capacity "
        "(null: the cadence)", gt=0)
    partial_decode_window_sec: float = setting(10.0, "audio window of a partial decode (seconds)", gt=0)
    emit_final_on_vad: bool = setting(True, "each VAD endpoint ends the utterance with a final result")
    max_pending_decodes_per_stream: int = setting(8, "queued decodes per stream before partials drop", ge=1)
    max_pending_decodes_global: int = setting(512, "queued decodes in total before backpressure", ge=1)
    max_total_buffer_bytes: int = setting(268435456, "buffered audio bytes across all sessions", ge=1)
    decode_queue_timeout_sec: float = setting(5.0, "seconds a final waits for a decode slot (0 = no limit)", ge=0)
    max_decode_sec: float = setting(
        10.0, "one decode with session-chosen options may take this long before its stream ends (0 = no limit)", ge=0)
    decode_batch_window_ms: float = setting(0.0, "decode batching window in ms (0 disables)", ge=0)
    max_decode_batch_size: int = setting(8, "decode tasks per batch (1 disables)", ge=1)
    decode_final_reserved_slots: int = setting(
        1, "decode slots ordinary partials leave to finals while finals are due soon (at most pool_size - 1)", ge=0)
    buffer_overlap_sec: float = setting(
        0.0, "audio before a buffer-cap cut repeated in the next utterance (seconds)", ge=0)
    grpc_max_receive_message_bytes: int = setting(8388608, "largest inbound gRPC message (bytes)", ge=1)
    grpc_max_send_message_bytes: int = setting(4194304, "largest outbound gRPC message (bytes)", ge=1)
    sample_rate: int = setting(16000, "sample rate (Hz) assumed when a chunk omits it", ge=1)
    memory_budget_bytes: int | None = setting(
        None, "process memory budget (bytes); null = the cgroup memory limit when set, 0 = none", ge=0)
    memory_per_session_bytes: int = setting(
        4194304, "memory reserved per new session when checking the budget (bytes)", ge=0)
    partial_skip_unchanged: bool = setting(True, "skip a partial decode when no speech arrived since the last one")
    speculative_finals: str = setting(
        "auto", "finals-only sessions decode the final's audio once silence reaches the tail (0.25 s) and "
        "deliver it at the endpoint when no speech came in between: always, never, or auto (only while a decode "
        "slot is idle and the slots were mostly idle of late; finals are never dropped); partial sessions always do",
        choices=SPECULATIVE_FINALS)


@dataclass(frozen=True)
class VadConfig:
    silence: float = setting(0.5, "trailing silence (seconds) that ends an utterance", gt=0)
    threshold: float = setting(0.5, "Silero VAD speech probability threshold (0-1)", **RATIO)
    model_pool_size: int = setting(4, "VAD model pool size (0 uses server.max_sessions)", ge=0)
    model_prewarm: int = setting(1, "VAD models created at startup", ge=0)
    model_pool_growth_factor: float = setting(1.5, "VAD pool growth factor on demand", ge=1)


@dataclass(frozen=True)
class SafetyConfig:
    speech_rms_threshold: float = setting(0.0, "minimum RMS (0-1 full scale) for audio to count as speech",
                                       **RATIO)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = setting("INFO", "log level", choices=LOG_LEVELS, upper=True)
    file: str | None = setting(None, "log file path (null = console only)", nonempty=True)
    faster_whisper_level: str | None = setting(None, "faster_whisper logger level (null = WARNING)",
                                            choices=LOG_LEVELS, upper=True)
    log_transcripts: bool = setting(False, "write transcript text to transcript_file (PII)")
    transcript_file: str | None = setting(None, "dedicated transcript log file", nonempty=True)
    transcript_retention_days: float = setting(7.0, "days transcript logs are kept", gt=0)


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str | None = setting(None, "TLS certificate chain (PEM) for gRPC", nonempty=True)
    key_file: str | None = setting(None, "TLS private key (PEM) for gRPC", nonempty=True)
    required: bool = setting(False, "refuse to start without cert_file and key_file")


@dataclass(frozen=True)
class MetricsConfig:
    expose_api_key_sessions: bool = setting(False, "include active_sessions_by_api in /metrics")


@dataclass(frozen=True)
class AuthConfig:
    require_api_key: bool = setting(False, "require an api_key attribute on CreateSession")
    create_session_auth_profile: str = setting("none", "CreateSession auth", choices=AUTH_PROFILES)
    create_session_auth_secret: str = setting("", "HMAC secret of the signed_token profile")
    create_session_auth_ttl_sec: float = setting(300.0, "signed token TTL / clock skew seconds (0 disables)",
                                              ge=0)
    allowed_api_keys: list[str] | None = setting(
        None, "api keys CreateSession accepts, plain or sha256:<hex> (null = any well-formed key)")
    allowed_api_keys_file: str = setting("", "file of allowed api keys, one a line (plain or sha256:<hex>)")
    session_ticket_secret: str = setting("", "HMAC secret of session tickets (empty: random per boot)")


@dataclass(frozen=True)
class StorageConfig:
    persist_audio: bool = setting(False, "save session audio to directory")
    directory: str = setting("data/audio", "where persisted audio goes", nonempty=True)
    queue_max_chunks: int = setting(256, "queued PCM chunks before the oldest is dropped", ge=1)
    queue_max_bytes: int = setting(16777216, "queued PCM bytes before the oldest chunk is dropped", ge=1)
    max_bytes: int | None = setting(None, "byte cap of the directory (null = none)", ge=1)
    max_files: int | None = setting(None, "file-count cap (null = none)", ge=1)
    max_age_days: float | None = setting(None, "retention in days (null = forever)", gt=0)


@dataclass(frozen=True)
class HealthConfig:
    window_sec: float = setting(60.0, "rolling window of decode health (seconds)", gt=0)
    min_events: int = setting(5, "decodes in the window before ratios are judged", ge=0)
    max_timeout_ratio: float = setting(0.5, "degraded above this decode timeout ratio", **RATIO)
    min_success_ratio: float = setting(0.5, "degraded below this decode success ratio", **RATIO)


@dataclass(frozen=True)
class DecodeConfig:
    """What a session may change of its decode profile (attributes `decode.<option>`)."""

    client_overrides: list[str] = setting(
        None, "decode options a session may override ([] = none)", factory=lambda: list(DECODE_OPTION_NAMES))
    max_client_work: int = setting(
        10, "worst-case greedy decodes one decode may cost after a session's overrides "
        "(beam or best_of per fallback rung; a profile's own cost is always allowed)", ge=1)


@dataclass(frozen=True)
class WyomingConfig:
    """The Wyoming (Home Assistant) front door. Wyoming carries no credentials: keep it on a trusted
    segment and name that segment in allow_networks."""

    port: int = setting(0, "Wyoming TCP port (0 = off)", **PORT)
    host: str = setting("0.0.0.0", "Wyoming bind address ('*' = all, IPv4 and IPv6)", nonempty=True)
    allow_networks: list[str] = setting(None, "client CIDRs/addresses allowed ([] = any)", factory=list)
    api_key: str = setting("", "api_key the Wyoming sessions carry when auth requires one")
    max_connections: int = setting(64, "open Wyoming connections", ge=1)
    max_connections_per_address: int = setting(
        16, "open Wyoming connections per client address (0 disables; held below max_connections)", ge=0)
    idle_timeout_sec: float = setting(
        30.0, "seconds a connection may go without audio or a transcription (describe/ping do not count)", gt=0)
    max_event_bytes: int = setting(1048576, "largest event data + payload (bytes)", ge=1024)
    zeroconf: bool = setting(False, "announce _wyoming._tcp by mDNS for Home Assistant (the discovery extra)")
    zeroconf_name: str = setting("", "the announced name (empty: stt-appliance-<hostname>)")
    zeroconf_address: str = setting("", "the address announced, on its interface (empty: the LAN address)")


@dataclass(frozen=True)
class OpenAIConfig:
    """The OpenAI-compatible transcription API (/v1/audio/*, /v1/models) on its own HTTP listener, the
    client plane; /health and /metrics stay on the operator plane (server.metrics_port)."""

    enabled: bool = setting(True, "serve /v1/audio/transcriptions, /v1/audio/translations and /v1/models")
    max_upload_bytes: int = setting(26214400, "largest request body of an upload (bytes; OpenAI's own is 25 MiB)",
                                    ge=65536, le=1073741824)
    max_concurrent_requests: int = setting(2, "uploads transcribed at once; more get ERR1007 with Retry-After",
                                           ge=1, le=64)
    request_timeout_sec: float = setting(300.0, "longest an upload may take to transcribe (ERR1012 past it)", gt=0)
    # The client plane: its own listener, so uploads and slow clients never take the operator's slots.
    host: str = setting("", "bind address of the OpenAI API (empty: server.http_host)")
    port: int = setting(8001, "TCP port of the OpenAI API (the client plane; 0 = any free port)", **PORT)
    max_connections: int = setting(32, "open connections to the OpenAI API", ge=2, le=1024)
    max_connections_per_address: int = setting(
        8, "open OpenAI API connections per client address (0 disables; held below the total)", ge=0)
    header_timeout_sec: float = setting(
        10.0, "seconds a connection may take to send a request header (a byte now and then does not count)",
        gt=0, le=300)
    body_timeout_sec: float = setting(120.0, "seconds an upload's body may take to arrive after its header",
                                      gt=0, le=3600)
    tls: bool = setting(True, "serve https:// with tls.cert_file/key_file when they are set (false: plain HTTP)")


@dataclass(frozen=True)
class WebSocketConfig:
    """The live WebSocket door, compatible with Deepgram's streaming API (/v1/listen), and the captions
    page at /, on its own listener. wss:// with tls.cert_file/key_file; plain ws:// per allow_plaintext."""

    enabled: bool = setting(True, "serve the live WebSocket door (/v1/listen) and the captions page (/)")
    host: str = setting("", "bind address ('*' = all, or a comma-separated list; empty: server.http_host)")
    port: int = setting(8002, "TCP port of the WebSocket door (0 = any free port)", **PORT)
    allow_networks: list[str] = setting(None, "client CIDRs/addresses allowed ([] = any)", factory=list)
    allow_plaintext: str = setting("loopback", "plain ws:// without a certificate: loopback clients only, any "
                                   "client, or never (refuse to start)", choices=PLAINTEXT_POLICIES)
    tls: bool = setting(True, "serve wss:// with tls.cert_file/key_file when they are set")
    max_connections: int = setting(32, "open WebSocket connections (handshakes included)", ge=2, le=4096)
    max_connections_per_address: int = setting(
        8, "open WebSocket connections per client address (0 disables; held below max_connections)", ge=0)
    handshake_timeout_sec: float = setting(10.0, "seconds a connection may take to finish its TLS and HTTP "
                                           "upgrade handshake", gt=0, le=120)
    first_message_timeout_sec: float = setting(10.0, "seconds from the upgrade to the first audio frame "
                                               "(KeepAlive does not count)", gt=0, le=120)
    idle_timeout_sec: float = setting(30.0, "seconds a connection may go without audio (KeepAlive does not count)",
                                      gt=0, le=3600)
    max_message_bytes: int = setting(262144, "largest WebSocket message, audio or control (bytes)",
                                     ge=4096, le=16777216)
    word_timestamps: bool = setting(True, "finals carry aligned word timings (false: words spread evenly over "
                                    "each final's span)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = setting("tiny.en", "Whisper model name or path", nonempty=True)
    backend: str = setting("faster_whisper", "decode backend", choices=BACKENDS)
    device: str = setting("cpu", "compute device", choices=DEVICES)
    compute_type: str = setting("default", "weight/compute precision (default: the load profile's)",
                             choices=COMPUTE_TYPES)
    pool_size: int = setting(1, "preloaded model instances", ge=1)
    language: str = setting("", "language code (empty = auto-detect)")
    languages: list[str] | None = setting(None, "languages a multilingual model detects among when a session names "
                                       "none; one is forced; other session languages refused (null = all)",
                                       nonempty=True)
    task: str = setting("transcribe", "transcribe or translate to English", choices=TASKS)
    default_decode_profile: str = setting("realtime", "decode profile used when a session names none",
                                       nonempty=True)
    default_model_load_profile: str = setting("default", "load profile of /admin/load_model", nonempty=True)
    profile: str = setting("auto", "load profile at boot: auto (detect hardware) or a profile name",
                        nonempty=True)
    cpu_threads: int = setting(
        0, "CPU threads per model instance (0 = auto: the usable cores split over pool_size)", ge=0)
    model_dir: str | None = setting(None, "local CTranslate2 model directory (overrides name)", nonempty=True)
    encode_window: str = setting("bucketed", "encoder input: bucketed lengths or the full 30 s window",
                              choices=ENCODE_WINDOWS)
    # the same figure as window_check.SECOND_LOOK_BELOW (a test holds them equal)
    second_look_below: float = setting(
        0.7, "a final decoded on a bucketed window with a confidence under this is decoded again on the "
        "full 30 s window while the box has room, and the more confident reading kept (0 = never)", ge=0, le=1)


@dataclass(frozen=True)
class ModelLoadProfile:
    model_size: str = setting("tiny.en", "model name or path", nonempty=True)
    backend: str = setting("faster_whisper", "decode backend", choices=BACKENDS)
    device: str = setting("cpu", "compute device", choices=DEVICES)
    compute_type: str = setting("default", "weight/compute precision (default: the backend's choice)",
                             choices=COMPUTE_TYPES)
    pool_size: int = setting(1, "preloaded model instances", ge=1)


def _default_load_profiles() -> dict[str, ModelLoadProfile]:
    return {"default": ModelLoadProfile()}


def _default_decode_profiles() -> dict[str, DecodeOptions]:
    return {"realtime": DecodeOptions(), "accurate": DecodeOptions(beam_size=5, best_of=5)}


class ConfigError(SettingError):
    """A bad setting. `key` is the dotted key ("server.max_sessions"), "" for file-level errors."""


SECTIONS: dict[str, type] = {
    "server": ServerConfig, "vad": VadConfig, "safety": SafetyConfig, "logging": LoggingConfig,
    "tls": TlsConfig, "metrics": MetricsConfig, "auth": AuthConfig, "storage": StorageConfig,
    "health": HealthConfig, "model": ModelConfig, "decode": DecodeConfig, "wyoming": WyomingConfig,
    "openai": OpenAIConfig, "websocket": WebSocketConfig,
}
PROFILE_SECTIONS = ("model_load_profiles", "decode_profiles")
ALL_SECTIONS = (*SECTIONS, *PROFILE_SECTIONS)

# Keys that did nothing and were removed. An older config file, env var or flag that still sets
# one loads with a logged warning naming it and the reason, and the value is ignored.
DEPRECATED_KEYS: dict[str, str] = {
    "server.grpc_worker_threads": (
        "the gRPC server runs on asyncio (grpc.aio), so no handler thread pool exists to size and streams "
        "hold no thread; decode concurrency is model.pool_size and the stream cap is server.max_sessions"),
    "model.language_fix": (
        "a non-empty model.language already decodes in that language instead of detecting it (a session "
        "may still ask for another); leave model.language empty to auto-detect"),
}


def section_fields(section: str) -> dict[str, FieldSpec]:
    """The keys of a YAML section (server, vad, ..., model, model_load_profiles) and their specs."""
    if section == "model_load_profiles":
        return field_specs(ModelLoadProfile)
    return field_specs(SECTIONS[section])
