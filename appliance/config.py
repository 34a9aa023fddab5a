"""Typed configuration: the one source of truth for every setting of the daemon.

Each YAML section is a frozen dataclass whose field names are the YAML key names
(`appliance.config_schema`); field metadata carries the help text and the accepted range/choices.
Values are layered (`appliance.config_sources`) with precedence CLI overrides (`appliance.config_cli`)
> `STT_<SECTION>_<KEY>` env vars > YAML files > dataclass defaults, and every value is checked on
load: unknown sections/keys, wrong types, out-of-range values and conflicting settings raise
`ConfigError` naming the dotted key, the value received and what is accepted. This module builds
and cross-checks the typed `AppConfig` and is where callers import all of it from.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.config_cli import add_serve_arguments, overrides_from_args
from appliance.config_schema import (
    AUTH_PROFILES,
    BACKENDS,
    COMPUTE_TYPES,
    DEPRECATED_KEYS,
    DEVICES,
    ENCODE_WINDOWS,
    LOG_LEVELS,
    PORT,
    RATIO,
    SECTIONS,
    TASKS,
    AuthConfig,
    ConfigError,
    DecodeConfig,
    HealthConfig,
    LoggingConfig,
    MetricsConfig,
    ModelConfig,
    ModelLoadProfile,
    OpenAIConfig,
    SafetyConfig,
    ServerConfig,
    StorageConfig,
    TlsConfig,
    VadConfig,
    WebSocketConfig,
    WyomingConfig,
    _default_decode_profiles,
    _default_load_profiles,
    section_fields,
)
from appliance.config_sources import (
    ENV_ALIASES,
    RawConfig,
    default_config_paths,
    env_layer,
    env_var_name,
    merge_file,
    merge_overrides,
    read_file,
    unknown_key,
)
from appliance.decode_options import DECODE_OPTION_NAMES, DecodeOptionError, DecodeOptions, parse_decode_options
from appliance.fields import FieldSpec, field_specs, show
from appliance.languages import WHISPER_LANGUAGES

# This is the config's public home: the schema and the layers live in config_schema, config_sources
# and config_cli, and their public names are re-exported here.
__all__ = [
    "AUTH_PROFILES",
    "BACKENDS",
    "COMPUTE_TYPES",
    "DEPRECATED_KEYS",
    "DEVICES",
    "ENCODE_WINDOWS",
    "ENV_ALIASES",
    "LOG_LEVELS",
    "PORT",
    "RATIO",
    "SECTIONS",
    "TASKS",
    "AppConfig",
    "AuthConfig",
    "ConfigError",
    "DecodeConfig",
    "DecodeOptions",
    "FieldSpec",
    "HealthConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "ModelLoadProfile",
    "OpenAIConfig",
    "SafetyConfig",
    "ServerConfig",
    "StorageConfig",
    "TlsConfig",
    "VadConfig",
    "WebSocketConfig",
    "WyomingConfig",
    "add_serve_arguments",
    "default_config_paths",
    "env_var_name",
    "load_config",
    "load_config_from_args",
    "overrides_from_args",
    "section_fields",
]

log = logging.getLogger(__name__)


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
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    model_load_profiles: dict[str, ModelLoadProfile] = field(default_factory=_default_load_profiles)
    decode_profiles: dict[str, DecodeOptions] = field(default_factory=_default_decode_profiles)

    def as_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain nested dict (YAML-shaped); secrets are masked unless `redact` is false."""
        data = asdict(self)
        for profile in data["decode_profiles"].values():
            if isinstance(profile["temperature"], tuple):
                profile["temperature"] = list(profile["temperature"])
        for section, secret in (("auth", "create_session_auth_secret"), ("auth", "session_ticket_secret"),
                                ("wyoming", "api_key")):
            if redact and data[section][secret]:
                data[section][secret] = "***"
        return data

    def with_overrides(self, overrides: Mapping[str, Any]) -> AppConfig:
        """A copy with dotted-key overrides applied and everything re-validated."""
        raw = RawConfig(values=self.as_dict(redact=False))
        merge_overrides(raw, overrides)
        return _build(raw)


# --- building and cross-checks -----------------------------------------------------------------

def _build_section(cls: type, body: Mapping[str, Any], prefix: str, sources: Mapping[str, str],
                   defaults: Mapping[str, Any] | None = None) -> Any:
    specs = field_specs(cls)
    values = dict(defaults or {})
    for key, value in body.items():
        if key not in specs:
            raise unknown_key(f"{prefix}.{key}", str(key), list(specs), f"key in {prefix!r}", "")
        dotted = f"{prefix}.{key}"
        origin = sources.get(dotted) or sources.get(prefix.split(".")[0], "")
        values[key] = specs[key].coerce(dotted, value, origin, error=ConfigError)
    return cls(**values)


def _profile_names(section: str, body: Mapping[Any, Any], sources: Mapping[str, str]) -> None:
    for name, value in body.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(section, f"{section}: profile names must be non-empty strings, got {show(name)}")
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{section}.{name}", f"{section}.{name}: expected a mapping, got "
                                                   f"{show(value)} (in {sources.get(section, '')})")


def _load_profiles(model: ModelConfig, raw: RawConfig) -> dict[str, ModelLoadProfile]:
    body_by_name = raw.values.get("model_load_profiles") or {}
    _profile_names("model_load_profiles", body_by_name, raw.sources)
    inherited: dict[str, Any] = {"model_size": model.name, "backend": model.backend, "device": model.device,
                                 "compute_type": model.compute_type, "pool_size": model.pool_size}
    profiles = {name: _build_section(ModelLoadProfile, body or {}, f"model_load_profiles.{name}", raw.sources,
                                     inherited)
                for name, body in body_by_name.items()}
    if not profiles:  # seed: "If omitted, a default profile is derived from the model section"
        profiles = {model.default_model_load_profile: ModelLoadProfile(**inherited)}
    return profiles


def _decode_profiles(raw: RawConfig) -> dict[str, DecodeOptions]:
    body_by_name = raw.values.get("decode_profiles")
    if body_by_name is None:
        return _default_decode_profiles()
    _profile_names("decode_profiles", body_by_name, raw.sources)
    profiles = {}
    for name, body in body_by_name.items():
        try:
            profiles[name] = parse_decode_options(body, f"decode_profiles.{name}")
        except DecodeOptionError as err:
            raise ConfigError(f"decode_profiles.{name}.{err.key}", str(err)) from err
    return profiles


def _build(raw: RawConfig) -> AppConfig:
    built = {s: _build_section(cls, raw.values.get(s, {}), s, raw.sources) for s, cls in SECTIONS.items()}
    cfg = AppConfig(**built, model_load_profiles=_load_profiles(built["model"], raw),
                    decode_profiles=_decode_profiles(raw))
    _check_consistency(cfg)
    _check_deprecated(cfg, raw.deprecated)
    return cfg


def _check_deprecated(cfg: AppConfig, deprecated: Mapping[str, tuple[str, Any]]) -> None:
    """Warn about each deprecated key still set; refuse the one combination whose intent is lost."""
    for dotted, (origin, value) in deprecated.items():
        if dotted == "model.language_fix" and value is True and not cfg.model.language and not cfg.model.languages:
            # Forcing a language was asked for but none is named: auto-detecting would ignore the intent.
            raise ConfigError("model.language", f"model.language: model.language_fix (deprecated, from {origin}) "
                                                "is true, so expected a language code (e.g. 'en'), got ''")
        log.warning("config key %s (from %s) is deprecated and ignored, so remove it: %s", dotted, origin,
                    DEPRECATED_KEYS[dotted])


def _check_languages(language: str, languages: list[str]) -> None:
    """model.languages holds Whisper codes, and model.language (every session's default) is one of them."""
    unknown = [code for code in languages if code not in WHISPER_LANGUAGES]
    if unknown:
        raise ConfigError("model.languages", f"model.languages: {', '.join(map(repr, unknown))} not Whisper "
                                             "language code(s) (e.g. en, de, fr, ja)")
    if language and languages and language not in languages:
        raise ConfigError("model.language", f"model.language: {language!r} is not in model.languages "
                                            f"({', '.join(languages)}): sessions naming no language would be refused")


def _check_wyoming(cfg: AppConfig) -> None:
    """Wyoming carries no credentials: where CreateSession needs some, the operator names the api_key
    its sessions act as (and should fence the port with allow_networks); a per-request signature
    cannot be made up for it at all."""
    wyoming, auth = cfg.wyoming, cfg.auth
    if not wyoming.port:
        return
    if auth.create_session_auth_profile == "signed_token":
        raise ConfigError("wyoming.port", "wyoming.port: the Wyoming protocol cannot carry the signed tokens that "
                                          "auth.create_session_auth_profile 'signed_token' requires; set "
                                          "wyoming.port to 0 or use the api_key profile")
    if (auth.require_api_key or auth.create_session_auth_profile == "api_key") and not wyoming.api_key:
        raise ConfigError("wyoming.api_key", "wyoming.api_key: expected the api_key Wyoming sessions act as, "
                                             "since this server requires one on every session, got ''")


def _check_websocket(cfg: AppConfig) -> None:
    """allow_plaintext 'never' needs the certificate the door would serve wss:// with."""
    ws, tls = cfg.websocket, cfg.tls
    if ws.enabled and ws.allow_plaintext == "never" and not (ws.tls and tls.cert_file and tls.key_file):
        raise ConfigError("websocket.allow_plaintext", "websocket.allow_plaintext: 'never' needs tls.cert_file and "
                                                       "tls.key_file (and websocket.tls true) to serve wss://")


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
    _check_wyoming(cfg)
    _check_websocket(cfg)
    _check_languages(cfg.model.language, cfg.model.languages or [])
    if cfg.auth.create_session_auth_profile == "signed_token" and not cfg.auth.create_session_auth_secret:
        raise ConfigError("auth.create_session_auth_secret",
                          "auth.create_session_auth_secret: expected a non-empty secret when "
                          "auth.create_session_auth_profile is 'signed_token', got ''")
    keys_file = cfg.auth.allowed_api_keys_file
    if keys_file and not os.access(keys_file, os.R_OK):
        raise ConfigError("auth.allowed_api_keys_file",
                          f"auth.allowed_api_keys_file: {keys_file!r} is not a readable file")
    if cfg.logging.log_transcripts and not cfg.logging.transcript_file:
        raise ConfigError("logging.transcript_file",
                          "logging.transcript_file: logging.log_transcripts is true but no transcript_file "
                          "is set (transcripts are only written to their own file, never the main log)")
    unknown_overrides = sorted(set(cfg.decode.client_overrides) - set(DECODE_OPTION_NAMES))
    if unknown_overrides:
        raise ConfigError("decode.client_overrides",
                          f"decode.client_overrides: unknown decode option(s) {unknown_overrides}; "
                          f"allowed: {', '.join(DECODE_OPTION_NAMES)}")
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

def load_config(server_path: str | os.PathLike[str] | None = None,
                model_path: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> AppConfig:
    """Load, merge and validate: overrides (dotted keys) > env (`STT_*`) > files > defaults.

    A path of None skips that file. `env` defaults to `os.environ`; pass `{}` to ignore it.
    """
    raw = RawConfig()
    for path in (server_path, model_path):
        if path is not None:
            merge_file(raw, read_file(Path(path)), Path(path))
    for dotted, (name, value) in env_layer(os.environ if env is None else env).items():
        merge_overrides(raw, {dotted: value}, origin=name)
    merge_overrides(raw, overrides or {})
    return _build(raw)


def load_config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AppConfig:
    """`load_config` with the files named by --config/--model-config and the flags given."""
    return load_config(server_path=args.config, model_path=args.model_config,
                       overrides=overrides_from_args(args), env=env)
