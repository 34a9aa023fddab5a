"""The decode-option whitelist: which Whisper decode options a profile or a session may set.

`DecodeOptions` is the one typed record of them. Named profiles (`decode_profiles` in
config/model.yaml) are parsed with `parse_decode_options`; per-session overrides arrive as
strings (session attributes) and go through `apply_overrides`. Anything off the whitelist or out
of range raises `DecodeOptionError`, which transports report as ERR1010.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Mapping

import yaml


class DecodeOptionError(ValueError):
    """A decode option that is unknown or has a bad value; `key` is the option name."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class DecodeOptions:
    """Whisper decode options (names and meanings as in faster-whisper's `transcribe`)."""

    beam_size: int = 1  # beam width (1 = greedy)
    best_of: int = 1  # candidates sampled when temperature > 0
    patience: float = 1.0  # beam search patience factor
    temperature: float | tuple[float, ...] = 0.0  # sampling temperature, or a fallback ladder
    length_penalty: float = 1.0  # exponent of the length normalisation
    without_timestamps: bool = True  # decode text only, no timestamp tokens
    compression_ratio_threshold: float | None = 2.4  # gzip ratio above which output counts as a loop
    no_speech_threshold: float | None = 0.6  # no-speech probability above which a segment is silence
    log_prob_threshold: float | None = -1.0  # mean log-probability below which output is rejected
    repetition_penalty: float = 1.0  # > 1 penalises tokens already generated
    no_repeat_ngram_size: int = 0  # forbid repeating n-grams of this size (0 = off)
    suppress_blank: bool = True  # suppress blank outputs at the start of sampling
    initial_prompt: str | None = None  # text given to the decoder as prior context
    hotwords: str | None = None  # words/phrases to bias the decoder towards

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments for a backend's transcribe call."""
        return asdict(self)


# --- value checks: each returns the (normalised) value or raises _Bad(expected) -------------

class _Bad(Exception):
    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(ge: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < ge:
            raise _Bad(f"an integer >= {ge}")
        return value
    return check


def _float(*, gt: float | None = None, ge: float | None = None, le: float | None = None,
           nullable: bool = False) -> Callable[[Any], float | None]:
    parts = []
    if gt is not None:
        parts.append(f"> {gt:g}")
    if ge is not None and le is not None:
        parts.append(f"between {ge:g} and {le:g}")
    elif ge is not None:
        parts.append(f">= {ge:g}")
    expected = " ".join(["a number", *parts]) + (" or null" if nullable else "")

    def check(value: Any) -> float | None:
        if value is None and nullable:
            return None
        if not _is_number(value):
            raise _Bad(expected)
        if (gt is not None and value <= gt) or (ge is not None and value < ge) \
                or (le is not None and value > le):
            raise _Bad(expected)
        return float(value)
    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _Bad("a string or null")
    return value


def _temperature(value: Any) -> float | tuple[float, ...]:
    expected = "a number >= 0, or a non-empty list of numbers >= 0"
    if isinstance(value, (list, tuple)):
        if not value or not all(_is_number(v) and v >= 0 for v in value):
            raise _Bad(expected)
        return tuple(float(v) for v in value)
    if not _is_number(value) or value < 0:
        raise _Bad(expected)
    return float(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "beam_size": _int(1),
    "best_of": _int(1),
    "patience": _float(gt=0),
    "temperature": _temperature,
    "length_penalty": _float(ge=0),
    "without_timestamps": _bool,
    "compression_ratio_threshold": _float(gt=0, nullable=True),
    "no_speech_threshold": _float(ge=0, le=1, nullable=True),
    "log_prob_threshold": _float(nullable=True),
    "repetition_penalty": _float(gt=0),
    "no_repeat_ngram_size": _int(0),
    "suppress_blank": _bool,
    "initial_prompt": _text,
    "hotwords": _text,
}

DECODE_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(DecodeOptions))
if set(_CHECKS) != set(DECODE_OPTION_NAMES):  # keeps the whitelist and the dataclass in step
    raise RuntimeError("every DecodeOptions field needs exactly one check in _CHECKS")

_TEXT_OPTIONS = frozenset({"initial_prompt", "hotwords"})


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _unknown(key: Any, where: str) -> DecodeOptionError:
    close = difflib.get_close_matches(str(key), DECODE_OPTION_NAMES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DecodeOptionError(
        str(key), f"{where}.{key}: unknown decode option{hint}; allowed: {', '.join(DECODE_OPTION_NAMES)}")


def _validated(mapping: Mapping[Any, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in _CHECKS:
            raise _unknown(key, where)
        try:
            out[key] = _CHECKS[key](value)
        except _Bad as bad:
            raise DecodeOptionError(
                key, f"{where}.{key}: expected {bad.expected}, got {_show(value)}") from None
    return out


def parse_decode_options(mapping: Mapping[str, Any] | None, where: str) -> DecodeOptions:
    """Build `DecodeOptions` from a profile mapping; options not given keep their defaults.

    `where` names the origin in error messages (e.g. ``decode_profiles.realtime``).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise DecodeOptionError("", f"{where}: expected a mapping of decode options, got {_show(mapping)}")
    return DecodeOptions(**_validated(mapping, where))


def _parse_text_value(key: str, text: Any) -> Any:
    """Session attribute values are strings; read them as YAML scalars/lists.

    Prompt-like options keep the raw text (YAML would turn "no" into false). A comma-separated
    temperature ladder ("0.0,0.2,0.4") is accepted besides the YAML list form.
    """
    if not isinstance(text, str) or key in _TEXT_OPTIONS:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if key == "temperature" and isinstance(value, str) and "," in value:
        try:
            return [float(part) for part in value.split(",")]
        except ValueError:
            return value
    return value


def apply_overrides(base: DecodeOptions, overrides: Mapping[str, Any], where: str) -> DecodeOptions:
    """Return `base` with `overrides` (option name -> string value, as sent by a client) applied."""
    for key in overrides:
        if key not in _CHECKS:
            raise _unknown(key, where)
    parsed = {key: _parse_text_value(key, text) for key, text in overrides.items()}
    return replace(base, **_validated(parsed, where))
