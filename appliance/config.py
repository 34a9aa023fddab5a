"""Typed configuration: the one source of truth for every setting of the daemon.

Each YAML section is a frozen dataclass whose field names are the YAML key names; field metadata
carries the help text and the accepted range/choices. Values are layered with precedence
CLI overrides > `STT_<SECTION>_<KEY>` env vars > YAML files > dataclass defaults, and every value is
checked on load: unknown sections/keys, wrong types, out-of-range values and conflicting settings
raise `ConfigError` naming the dotted key, the value received and what is accepted.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, get_args, get_type_hints

import yaml

from appliance.config_cli import add_serve_arguments, load_config_from_args, overrides_from_args
from appliance.decode_options import DecodeOptionError, DecodeOptions, parse_decode_options

__all__ = [
    "AppConfig", "ConfigError", "FieldSpec", "ServerConfig", "VadConfig", "SafetyConfig", "LoggingConfig",
    "TlsConfig", "MetricsConfig", "AuthConfig", "StorageConfig", "HealthConfig", "ModelConfig",
    "ModelLoadProfile", "DecodeOptions", "SECTIONS", "ENV_ALIASES", "add_serve_arguments",
    "default_config_paths", "env_var_name", "load_config", "load_config_from_args",
    "overrides_from_args", "section_fields",
]


class ConfigError(ValueError):
    """A bad setting. `key` is the dotted key ("server.max_sessions"), "" for file-level errors."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


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
    max_decode_batch_size: int = _opt(1, "decode tasks per batch (1 disables)", ge=1)
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
    compute_type: str = _opt("float32", "weight/compute precision", choices=COMPUTE_TYPES)
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
    cpu_threads: int = _opt(0, "CPU threads per model instance (0 = auto)", ge=0)
    model_dir: str | None = _opt(None, "local CTranslate2 model directory (overrides name)", nonempty=True)
    encode_window: str = _opt("full", "encoder input: full 30 s window or bucketed lengths",
                              choices=ENCODE_WINDOWS)


@dataclass(frozen=True)
class ModelLoadProfile:
    model_size: str = _opt("tiny.en", "model name or path", nonempty=True)
    backend: str = _opt("faster_whisper", "decode backend", choices=BACKENDS)
    device: str = _opt("cpu", "compute device", choices=DEVICES)
    compute_type: str = _opt("float32", "weight/compute precision", choices=COMPUTE_TYPES)
    pool_size: int = _opt(1, "preloaded model instances", ge=1)


def _default_load_profiles() -> dict[str, ModelLoadProfile]:
    return {"default": ModelLoadProfile()}


def _default_decode_profiles() -> dict[str, DecodeOptions]:
    return {"realtime": DecodeOptions(), "accurate": DecodeOptions(beam_size=5, best_of=5)}


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    model_load_profiles: dict[str, ModelLoadProfile] = field(default_factory=_default_load_profiles)
    decode_profiles: dict[str, DecodeOptions] = field(default_factory=_default_decode_profiles)

    def as_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain nested dict (YAML-shaped); secrets are masked unless `redact` is false."""
        data = asdict(self)
        for profile in data["decode_profiles"].values():
            if isinstance(profile["temperature"], tuple):
                profile["temperature"] = list(profile["temperature"])
        if redact and data["auth"]["create_session_auth_secret"]:
            data["auth"]["create_session_auth_secret"] = "***"
        return data

    def with_overrides(self, overrides: Mapping[str, Any]) -> AppConfig:
        """A copy with dotted-key overrides applied and everything re-validated."""
        raw, sources = self.as_dict(redact=False), {}
        _merge_overrides(raw, sources, overrides)
        return _build(raw, sources)


SECTIONS: dict[str, type] = {
    "server": ServerConfig, "vad": VadConfig, "safety": SafetyConfig, "logging": LoggingConfig,
    "tls": TlsConfig, "metrics": MetricsConfig, "auth": AuthConfig, "storage": StorageConfig,
    "health": HealthConfig, "model": ModelConfig,
}
PROFILE_SECTIONS = ("model_load_profiles", "decode_profiles")
ALL_SECTIONS = (*SECTIONS, *PROFILE_SECTIONS)

ENV_PREFIX = "STT_"
# Seed-README env names that map onto config keys.
ENV_ALIASES = {
    "STT_HTTP_RATE_LIMIT_RPS": "server.http_rate_limit_rps",
    "STT_HTTP_RATE_LIMIT_BURST": "server.http_rate_limit_burst",
    "STT_HTTP_TRUSTED_PROXIES": "server.http_trusted_proxies",
}
# Read by the HTTP layer, not config keys, yet they share a section's prefix.
ENV_NOT_CONFIG = frozenset({"STT_HEALTH_DETAIL_MODE"})


# --- field specs and value checks -------------------------------------------------------------

def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True)
class FieldSpec:
    """One config key: its type (bool, int, float, str or list of str), default, help and rules."""

    name: str
    base: type
    nullable: bool
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    upper: bool = False
    nonempty: bool = False

    @property
    def expected(self) -> str:
        if self.base is bool:
            text = "true or false"
        elif self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.base is list:
            text = "a list of non-empty strings"
        elif self.base is str:
            text = "a non-empty string" if self.nonempty else "a string"
        else:
            text = "an integer" if self.base is int else "a number"
            if self.ge is not None and self.le is not None:
                text += f" between {_num(self.ge)} and {_num(self.le)}"
            elif self.ge is not None:
                text += f" >= {_num(self.ge)}"
            elif self.gt is not None:
                text += f" > {_num(self.gt)}"
        return text + (" or null" if self.nullable else "")

    def _ok(self, value: Any) -> tuple[bool, Any]:
        if self.base is bool:
            return isinstance(value, bool), value
        if self.base is list:
            good = isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
            return good, list(value) if good else value
        if self.base is str:
            if not isinstance(value, str) or (self.nonempty and not value.strip()):
                return False, value
            value = value.upper() if self.upper else value
            return (self.choices is None or value in self.choices), value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        if self.base is int and not isinstance(value, int):
            return False, value
        if not math.isfinite(value):
            return False, value
        value = float(value) if self.base is float else value
        in_range = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le))
        return in_range, value

    def coerce(self, key: str, value: Any, origin: str = "") -> Any:
        """The validated (normalised) value, or ConfigError naming `key`, the value and `origin`."""
        if value is None and self.nullable:
            return None
        good, out = self._ok(value)
        if not good:
            where = f" (from {origin})" if origin else ""
            raise ConfigError(key, f"{key}: expected {self.expected}, got {_show(value)}{where}")
        if self.base is list and self.nullable and not out:
            return None  # an empty list means the same as null (e.g. model.languages: auto-detect)
        return out


@functools.cache
def _specs(cls: type) -> dict[str, FieldSpec]:
    hints = get_type_hints(cls)
    specs = {}
    for f in fields(cls):
        args = [a for a in get_args(hints[f.name]) if a is not type(None)]
        nullable = len(args) < len(get_args(hints[f.name]))
        base = args[0] if nullable else hints[f.name]
        base = getattr(base, "__origin__", base)  # list[str] -> list
        default = f.default if f.default_factory is MISSING else f.default_factory()
        specs[f.name] = FieldSpec(f.name, base, nullable, default, **f.metadata)
    return specs


def section_fields(section: str) -> dict[str, FieldSpec]:
    """The keys of a YAML section (server, vad, ..., model) and their specs."""
    if section == "model_load_profiles":
        return _specs(ModelLoadProfile)
    return _specs(SECTIONS[section])


def env_var_name(dotted: str) -> str:
    """`server.max_sessions` -> `STT_SERVER_MAX_SESSIONS`."""
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _unknown(key: str, name: str, allowed: list[str], what: str, origin: str) -> ConfigError:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f" in {origin}" if origin else ""
    return ConfigError(key, f"{key}: unknown {what}{where}{hint}; allowed: {', '.join(allowed)}")


# --- layers: files, env, overrides -------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """safe_load plus: duplicate keys are errors, and 1e-3 style floats parse as floats (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = _yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError("", f"cannot read config file {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError("", f"{path}: invalid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: expected a mapping of sections, got {_show(data)}")
    return data


def _merge_file(raw: dict[str, Any], sources: dict[str, str], data: dict[str, Any], path: Path) -> None:
    for section, body in data.items():
        if section not in ALL_SECTIONS:
            raise _unknown(str(section), str(section), list(ALL_SECTIONS), "section", str(path))
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ConfigError(section, f"{section}: expected a mapping, got {_show(body)} (in {path})")
        if section in PROFILE_SECTIONS:
            if section in raw:
                raise ConfigError(section, f"{section}: defined in both {sources[section]} and {path}")
            raw[section], sources[section] = body, str(path)
            continue
        allowed = list(section_fields(section))
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if key not in allowed:
                raise _unknown(dotted, str(key), allowed, f"key in section {section!r}", str(path))
            if dotted in sources:
                raise ConfigError(dotted, f"{dotted}: set in both {sources[dotted]} and {path}")
            raw.setdefault(section, {})[key] = value
            sources[dotted] = str(path)


def _parse_env(spec: FieldSpec, text: str) -> Any:
    """Env values are YAML scalars; strings stay raw text (YAML would read `no` as false)."""
    if spec.base is str:
        return None if spec.nullable and text.strip() in ("", "null", "~") else text
    try:
        value = _yaml(text)
    except yaml.YAMLError:
        return text  # reported as a wrong type by coerce()
    if spec.base is list and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _env_layer(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """dotted key -> (env var name, parsed value) for every STT_* variable that is a config key."""
    found: dict[str, tuple[str, Any]] = {}
    names = sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in ENV_NOT_CONFIG)
    for name in sorted(names, key=lambda n: n in ENV_ALIASES):  # canonical names first
        if name in ENV_ALIASES:
            dotted = ENV_ALIASES[name]
        else:
            section = next((s for s in SECTIONS if name.startswith(f"{ENV_PREFIX}{s.upper()}_")), None)
            if section is None:
                continue  # some other STT_* setting (STT_OBSERVABILITY_TOKEN, ...)
            key = name[len(ENV_PREFIX) + len(section) + 1:].lower()
            if key not in section_fields(section):
                allowed = [env_var_name(f"{section}.{k}") for k in section_fields(section)]
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{section}.{key}", f"{name}: environment variable names no key of "
                                                      f"section {section!r}{hint}; allowed: {', '.join(allowed)}")
            dotted = f"{section}.{key}"
        section, key = dotted.split(".")
        value = _parse_env(section_fields(section)[key], env[name])
        if dotted in found and found[dotted][1] != value:
            raise ConfigError(dotted, f"{dotted}: {found[dotted][0]}={env[found[dotted][0]]!r} conflicts "
                                      f"with {name}={env[name]!r}; set only one")
        found.setdefault(dotted, (name, value))
    return found


def _merge_overrides(raw: dict[str, Any], sources: dict[str, str], overrides: Mapping[str, Any],
                     origin: str = "overrides") -> None:
    for dotted, value in overrides.items():
        section, _, key = str(dotted).partition(".")
        if section not in SECTIONS:
            raise _unknown(str(dotted), section, list(SECTIONS), "section", origin)
        if key not in section_fields(section):
            raise _unknown(str(dotted), key, list(section_fields(section)),
                           f"key in section {section!r}", origin)
        raw.setdefault(section, {})[key] = value
        sources[dotted] = origin


# --- building and cross-checks -----------------------------------------------------------------

def _build_section(cls: type, body: Mapping[str, Any], prefix: str, sources: Mapping[str, str],
                   defaults: Mapping[str, Any] | None = None) -> Any:
    specs = _specs(cls)
    values = dict(defaults or {})
    for key, value in body.items():
        if key not in specs:
            raise _unknown(f"{prefix}.{key}", str(key), list(specs), f"key in {prefix!r}", "")
        dotted = f"{prefix}.{key}"
        origin = sources.get(dotted) or sources.get(prefix.split(".")[0], "")
        values[key] = specs[key].coerce(dotted, value, origin)
    return cls(**values)


def _profile_names(section: str, body: Mapping[Any, Any], sources: Mapping[str, str]) -> None:
    for name, value in body.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(section, f"{section}: profile names must be non-empty strings, got {_show(name)}")
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{section}.{name}", f"{section}.{name}: expected a mapping, got "
                                                   f"{_show(value)} (in {sources.get(section, '')})")


def _build(raw: Mapping[str, Any], sources: Mapping[str, str]) -> AppConfig:
    built = {s: _build_section(cls, raw.get(s, {}), s, sources) for s, cls in SECTIONS.items()}
    model: ModelConfig = built["model"]

    load_raw = raw.get("model_load_profiles") or {}
    _profile_names("model_load_profiles", load_raw, sources)
    inherited = {"model_size": model.name, "backend": model.backend, "device": model.device,
                 "compute_type": model.compute_type, "pool_size": model.pool_size}
    load_profiles = {name: _build_section(ModelLoadProfile, body or {}, f"model_load_profiles.{name}",
                                          sources, inherited)
                     for name, body in load_raw.items()}
    if not load_profiles:  # seed: "If omitted, a default profile is derived from the model section"
        load_profiles = {model.default_model_load_profile: ModelLoadProfile(**inherited)}

    decode_raw = raw.get("decode_profiles")
    decode_profiles = _default_decode_profiles() if decode_raw is None else {}
    _profile_names("decode_profiles", decode_raw or {}, sources)
    for name, body in (decode_raw or {}).items():
        try:
            decode_profiles[name] = parse_decode_options(body, f"decode_profiles.{name}")
        except DecodeOptionError as err:
            raise ConfigError(f"decode_profiles.{name}.{err.key}", str(err)) from err

    cfg = AppConfig(**built, model_load_profiles=load_profiles, decode_profiles=decode_profiles)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: AppConfig) -> None:
    """Settings that are valid alone but contradict each other."""
    tls, model = cfg.tls, cfg.model
    if tls.required and not (tls.cert_file and tls.key_file):
        raise ConfigError("tls.required", "tls.required: TLS is required but tls.cert_file/tls.key_file "
                                          "are not set")
    if bool(tls.cert_file) != bool(tls.key_file):
        have, missing = ("cert_file", "key_file") if tls.cert_file else ("key_file", "cert_file")
        raise ConfigError(f"tls.{missing}", f"tls.{missing}: tls.{have} is set but tls.{missing} is not; "
                                            "gRPC TLS needs both")
    if cfg.auth.create_session_auth_profile == "signed_token" and not cfg.auth.create_session_auth_secret:
        raise ConfigError("auth.create_session_auth_secret",
                          "auth.create_session_auth_secret: expected a non-empty secret when "
                          "auth.create_session_auth_profile is 'signed_token', got ''")
    if cfg.logging.log_transcripts and not cfg.logging.transcript_file:
        raise ConfigError("logging.transcript_file",
                          "logging.transcript_file: logging.log_transcripts is true but no transcript_file "
                          "is set (transcripts are only written to their own file, never the main log)")
    if model.language_fix and not model.language and not model.languages:
        raise ConfigError("model.language", "model.language: model.language_fix is true, so expected a "
                                            "language code (e.g. 'en'), got ''")
    decode_names = sorted(cfg.decode_profiles)
    if model.default_decode_profile not in cfg.decode_profiles:
        raise ConfigError("model.default_decode_profile",
                          f"model.default_decode_profile: expected one of {decode_names} "
                          f"(the decode_profiles), got {model.default_decode_profile!r}")
    load_names = sorted(cfg.model_load_profiles)
    if model.default_model_load_profile not in cfg.model_load_profiles:
        raise ConfigError("model.default_model_load_profile",
                          f"model.default_model_load_profile: expected one of {load_names} "
                          f"(the model_load_profiles), got {model.default_model_load_profile!r}")
    if model.profile != "auto" and model.profile not in cfg.model_load_profiles:
        raise ConfigError("model.profile", f"model.profile: expected 'auto' or one of {load_names}, "
                                           f"got {model.profile!r}")
    targets = [("model", model)] + [(f"model_load_profiles.{n}", p) for n, p in cfg.model_load_profiles.items()]
    for prefix, target in targets:
        if target.device == "mps" and target.backend != "torch_whisper":
            raise ConfigError(f"{prefix}.device", f"{prefix}.device: 'mps' needs backend 'torch_whisper', "
                                                  f"got backend {target.backend!r}")


# --- entry points ------------------------------------------------------------------------------

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "default_config"


def default_config_paths(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """`config/server.yaml` and `config/model.yaml` under `cwd` when present, else the packaged copies."""
    base = Path.cwd() if cwd is None else Path(cwd)
    paths = []
    for name in ("server.yaml", "model.yaml"):
        local = base / "config" / name
        paths.append(local if local.is_file() else PACKAGE_CONFIG_DIR / name)
    return paths[0], paths[1]


def load_config(server_path: str | os.PathLike[str] | None = None,
                model_path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> AppConfig:
    """Load, merge and validate: overrides (dotted keys) > env (`STT_*`) > files > defaults.

    A path of None skips that file. `env` defaults to `os.environ`; pass `{}` to ignore it.
    """
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in (server_path, model_path):
        if path is not None:
            _merge_file(raw, sources, _read_file(Path(path)), Path(path))
    for dotted, (name, value) in _env_layer(os.environ if env is None else env).items():
        _merge_overrides(raw, sources, {dotted: value}, origin=name)
    _merge_overrides(raw, sources, overrides or {})
    return _build(raw, sources)
