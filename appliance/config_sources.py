"""Where config values come from: YAML files, `STT_*` environment variables and dotted-key overrides.

Each layer is merged into one `RawConfig`: a YAML-shaped dict, with the origin of every key (a file
path, an env var name or "overrides") recorded for error messages. Unknown sections and keys,
duplicate YAML keys, a key set in two files and two env vars that disagree are refused here, naming
the key; values are checked later, when `appliance.config` builds the typed sections. A deprecated
key (`DEPRECATED_KEYS`) is set aside with its origin instead, for a warning.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.config_schema import (
    ALL_SECTIONS,
    DEPRECATED_KEYS,
    PROFILE_SECTIONS,
    SECTIONS,
    ConfigError,
    section_fields,
)
from appliance.fields import FieldSpec, show, unknown_message

ENV_PREFIX = "STT_"
# Seed-README env names that map onto config keys.
ENV_ALIASES = {
    "STT_HTTP_RATE_LIMIT_RPS": "server.http_rate_limit_rps",
    "STT_HTTP_RATE_LIMIT_BURST": "server.http_rate_limit_burst",
    "STT_HTTP_TRUSTED_PROXIES": "server.http_trusted_proxies",
}
# Read by the HTTP layer, not config keys, yet they share a section's prefix.
ENV_NOT_CONFIG = frozenset({"STT_HEALTH_DETAIL_MODE"})

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parent / "default_config"


def env_var_name(dotted: str) -> str:
    """`server.max_sessions` -> `STT_SERVER_MAX_SESSIONS`."""
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def default_config_paths(cwd: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """`config/server.yaml` and `config/model.yaml` under `cwd` when present, else the packaged copies."""
    base = Path.cwd() if cwd is None else Path(cwd)
    paths = []
    for name in ("server.yaml", "model.yaml"):
        local = base / "config" / name
        paths.append(local if local.is_file() else PACKAGE_CONFIG_DIR / name)
    return paths[0], paths[1]


@dataclass
class RawConfig:
    """The layers merged, not yet checked."""

    values: dict[str, Any] = field(default_factory=dict)  # YAML-shaped: section -> key -> value
    sources: dict[str, str] = field(default_factory=dict)  # dotted key (or profile section) -> origin
    deprecated: dict[str, tuple[str, Any]] = field(default_factory=dict)  # dotted key -> (origin, value)

    def set(self, dotted: str, value: Any, origin: str) -> None:
        if dotted in DEPRECATED_KEYS:
            self.deprecated[dotted] = (origin, value)
            return
        section, key = dotted.split(".")
        self.values.setdefault(section, {})[key] = value
        self.sources[dotted] = origin


def _known(section: str, key: str) -> bool:
    return key in section_fields(section) or f"{section}.{key}" in DEPRECATED_KEYS


def unknown_key(key: str, name: str, allowed: list[str], what: str, origin: str) -> ConfigError:
    return ConfigError(key, unknown_message(key, name, allowed, what, origin))


# --- YAML files --------------------------------------------------------------------------------

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
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects


def read_file(path: Path) -> dict[str, Any]:
    """The sections of one YAML config file; an empty file has none."""
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
        raise ConfigError("", f"{path}: expected a mapping of sections, got {show(data)}")
    return data


def merge_file(raw: RawConfig, data: dict[str, Any], path: Path) -> None:
    """Add one file's sections to `raw`; a key already set by the other file is a conflict."""
    for section, body in data.items():
        if section not in ALL_SECTIONS:
            raise unknown_key(str(section), str(section), list(ALL_SECTIONS), "section", str(path))
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise ConfigError(section, f"{section}: expected a mapping, got {show(body)} (in {path})")
        if section in PROFILE_SECTIONS:
            if section in raw.values:
                raise ConfigError(section, f"{section}: defined in both {raw.sources[section]} and {path}")
            raw.values[section], raw.sources[section] = body, str(path)
            continue
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if not _known(section, str(key)):
                raise unknown_key(dotted, str(key), list(section_fields(section)), f"key in section {section!r}",
                                  str(path))
            earlier = raw.sources.get(dotted) or raw.deprecated.get(dotted, ("",))[0]
            if earlier:
                raise ConfigError(dotted, f"{dotted}: set in both {earlier} and {path}")
            raw.set(dotted, value, str(path))


# --- environment variables and overrides -------------------------------------------------------

def _parse_env(spec: FieldSpec | None, text: str) -> Any:
    """Env values are YAML scalars; strings stay raw text (YAML would read `no` as false)."""
    if spec is not None and spec.base is str:
        return None if spec.nullable and text.strip() in ("", "null", "~") else text
    try:
        value = _yaml(text)
    except yaml.YAMLError:
        return text  # reported as a wrong type when the value is checked
    if spec is not None and spec.base is list and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _env_key(name: str) -> str | None:
    """The dotted key an `STT_*` variable names; None for other STT_* settings (STT_OBSERVABILITY_TOKEN)."""
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    section = next((s for s in SECTIONS if name.startswith(f"{ENV_PREFIX}{s.upper()}_")), None)
    if section is None:
        return None
    key = name[len(ENV_PREFIX) + len(section) + 1:].lower()
    if not _known(section, key):
        allowed = [env_var_name(f"{section}.{k}") for k in section_fields(section)]
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{section}.{key}", f"{name}: environment variable names no key of "
                                              f"section {section!r}{hint}; allowed: {', '.join(allowed)}")
    return f"{section}.{key}"


def env_layer(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """dotted key -> (env var name, parsed value) for every STT_* variable that is a config key."""
    found: dict[str, tuple[str, Any]] = {}
    names = sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in ENV_NOT_CONFIG)
    for name in sorted(names, key=lambda n: n in ENV_ALIASES):  # canonical names first
        dotted = _env_key(name)
        if dotted is None:
            continue
        section, key = dotted.split(".")
        value = _parse_env(section_fields(section).get(key), env[name])  # None: a deprecated key
        if dotted in found and found[dotted][1] != value:
            raise ConfigError(dotted, f"{dotted}: {found[dotted][0]}={env[found[dotted][0]]!r} conflicts "
                                      f"with {name}={env[name]!r}; set only one")
        found.setdefault(dotted, (name, value))
    return found


def merge_overrides(raw: RawConfig, overrides: Mapping[str, Any], origin: str = "overrides") -> None:
    """Set dotted keys in `raw` (env vars and CLI flags), above whatever the files said."""
    for dotted, value in overrides.items():
        section, _, key = str(dotted).partition(".")
        if section not in SECTIONS:
            raise unknown_key(str(dotted), section, list(SECTIONS), "section", origin)
        if not _known(section, key):
            raise unknown_key(str(dotted), key, list(section_fields(section)), f"key in section {section!r}",
                              origin)
        raw.set(str(dotted), value, origin)
