"""The decode-option whitelist: which Whisper decode options a profile or a session may set.

`DecodeOptions` is the one typed record of them. Named profiles (`decode_profiles` in
config/model.yaml) are parsed with `parse_decode_options`; per-session overrides arrive as
strings (session attributes) and go through `apply_overrides`. Each option is a `setting(...)`
field checked by `appliance.fields`, the same specs and messages as the config keys. Anything off
the whitelist or out of range raises `DecodeOptionError`, which transports report as ERR1010.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import yaml

from appliance.fields import SettingError, field_specs, setting, show, unknown_message


class DecodeOptionError(SettingError):
    """A decode option that is unknown or has a bad value; `key` is the option name."""


@dataclass(frozen=True)
class DecodeOptions:
    """Whisper decode options (names and meanings as in faster-whisper's `transcribe`)."""

    beam_size: int = setting(1, "beam width (1 = greedy)", ge=1)
    best_of: int = setting(1, "candidates sampled when temperature > 0", ge=1)
    patience: float = setting(1.0, "beam search patience factor", gt=0)
    temperature: float | tuple[float, ...] = setting(0.0, "sampling temperature, or a fallback ladder", ge=0,
                                                     ladder=True)
    length_penalty: float = setting(1.0, "exponent of the length normalisation", ge=0)
    without_timestamps: bool = setting(True, "decode text only, no timestamp tokens")
    compression_ratio_threshold: float | None = setting(2.4, "gzip ratio above which output counts as a loop",
                                                        gt=0)
    no_speech_threshold: float | None = setting(0.6, "no-speech probability above which a segment is silence",
                                                ge=0, le=1)
    log_prob_threshold: float | None = setting(-1.0, "mean log-probability below which output is rejected")
    repetition_penalty: float = setting(1.0, "> 1 penalises tokens already generated", gt=0)
    no_repeat_ngram_size: int = setting(0, "forbid repeating n-grams of this size (0 = off)", ge=0)
    suppress_blank: bool = setting(True, "suppress blank outputs at the start of sampling")
    initial_prompt: str | None = setting(None, "text given to the decoder as prior context")
    hotwords: str | None = setting(None, "words/phrases to bias the decoder towards")

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments for a backend's transcribe call."""
        return asdict(self)


DECODE_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(DecodeOptions))
_SPECS = field_specs(DecodeOptions)


def _unknown(key: Any, where: str) -> DecodeOptionError:
    return DecodeOptionError(str(key), unknown_message(f"{where}.{key}", str(key), DECODE_OPTION_NAMES,
                                                       "decode option"))


def _validated(mapping: Mapping[Any, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in _SPECS:
            raise _unknown(key, where)
        out[key] = _SPECS[key].coerce(f"{where}.{key}", value, error=DecodeOptionError, key=key)
    return out


def parse_decode_options(mapping: Mapping[str, Any] | None, where: str) -> DecodeOptions:
    """Build `DecodeOptions` from a profile mapping; options not given keep their defaults.

    `where` names the origin in error messages (e.g. ``decode_profiles.realtime``).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise DecodeOptionError("", f"{where}: expected a mapping of decode options, got {show(mapping)}")
    return DecodeOptions(**_validated(mapping, where))


def _parse_text_value(key: str, text: Any) -> Any:
    """Session attribute values are strings; read them as YAML scalars/lists.

    Prompt-like options keep the raw text (YAML would turn "no" into false). A comma-separated
    temperature ladder ("0.0,0.2,0.4") is accepted besides the YAML list form.
    """
    spec = _SPECS[key]
    if not isinstance(text, str) or spec.base is str:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if spec.ladder and isinstance(value, str) and "," in value:
        try:
            return [float(part) for part in value.split(",")]
        except ValueError:
            return value
    return value


def apply_overrides(base: DecodeOptions, overrides: Mapping[str, Any], where: str) -> DecodeOptions:
    """Return `base` with `overrides` (option name -> string value, as sent by a client) applied."""
    for key in overrides:
        if key not in _SPECS:
            raise _unknown(key, where)
    parsed = {key: _parse_text_value(key, text) for key, text in overrides.items()}
    return replace(base, **_validated(parsed, where))
