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
# The schema lives in config_schema; its names are re-exported here, the config's public home.
from appliance.config_schema import (  # noqa: F401
    AUTH_PROFILES, BACKENDS, COMPUTE_TYPES, DEVICES, ENCODE_WINDOWS, LOG_LEVELS, PORT, RATIO, TASKS,
    AuthConfig, HealthConfig, LoggingConfig, MetricsConfig, ModelConfig, ModelLoadProfile, SafetyConfig,
    ServerConfig, StorageConfig, TlsConfig, VadConfig, _default_decode_profiles, _default_load_profiles,
)

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
