"""The decode-option whitelist: which Whisper decode options a profile or a session may set.

`DecodeOptions` is the one typed record of them. Named profiles (`decode_profiles` in
config/model.yaml) are parsed with `parse_decode_options`; per-session overrides arrive as
strings (session attributes) and go through `apply_overrides`. Each option is a `setting(...)`
field checked by `appliance.fields`, the same specs and messages as the config keys. Anything off
the whitelist or out of range raises `DecodeOptionError`, which transports report as ERR1010.

Every option has an upper bound, because a client sets them: a decode's cost grows with the beam
width, the candidates sampled and the fallback ladder's length (`DecodeOptions.work`), and a prompt
has to fit Whisper's text context. Client values are read as flat scalars or one flat list, never
as YAML documents (a nested or aliased document is refused, not expanded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from appliance.fields import SettingError, field_specs, setting, show, unknown_message

MAX_LADDER_STEPS = 6  # faster-whisper's own default ladder: 0.0, 0.2, ..., 1.0
MAX_PROMPT_CHARS = 2000  # the token budget (Backend.max_prompt_tokens) is checked per model on top
MAX_VALUE_CHARS = 200  # a number, a boolean or a ladder needs far less


class DecodeOptionError(SettingError):
    """A decode option that is unknown or has a bad value; `key` is the option name."""


@dataclass(frozen=True)
class DecodeOptions:
    """Whisper decode options (names and meanings as in faster-whisper's `transcribe`)."""

    beam_size: int = setting(1, "beam width (1 = greedy)", ge=1, le=10)
    best_of: int = setting(1, "candidates sampled when temperature > 0", ge=1, le=10)
    patience: float = setting(1.0, "beam search patience factor", gt=0, le=4)
    temperature: float | tuple[float, ...] = setting(0.0, "sampling temperature, or a fallback ladder", ge=0,
                                                     le=1, ladder=True, max_items=MAX_LADDER_STEPS)
    length_penalty: float = setting(1.0, "exponent of the length normalisation", ge=0, le=5)
    without_timestamps: bool = setting(True, "decode text only, no timestamp tokens")
    compression_ratio_threshold: float | None = setting(2.4, "gzip ratio above which output counts as a loop",
                                                        gt=0, le=100)
    no_speech_threshold: float | None = setting(0.6, "no-speech probability above which a segment is silence",
                                                ge=0, le=1)
    log_prob_threshold: float | None = setting(-1.0, "mean log-probability below which output is rejected",
                                               ge=-100, le=0)
    repetition_penalty: float = setting(1.0, "> 1 penalises tokens already generated", gt=0, le=5)
    no_repeat_ngram_size: int = setting(0, "forbid repeating n-grams of this size (0 = off)", ge=0, le=50)
    suppress_blank: bool = setting(True, "suppress blank outputs at the start of sampling")
    initial_prompt: str | None = setting(None, "text given to the decoder as prior context",
                                         max_chars=MAX_PROMPT_CHARS)
    hotwords: str | None = setting(None, "words/phrases to bias the decoder towards", max_chars=MAX_PROMPT_CHARS)
    # Set per decode by the transcriber (finals of sessions with word_timestamps=true), not by clients.
    word_timestamps: bool = setting(False, "align each word to the audio (cross-attention); finals only")

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments for a backend's transcribe call."""
        return asdict(self)

    @property
    def ladder(self) -> tuple[float, ...]:
        return self.temperature if isinstance(self.temperature, tuple) else (self.temperature,)

    def work(self) -> int:
        """Worst-case cost of one decode in greedy decodes: every rung of the fallback ladder runs
        when the thresholds keep rejecting (a rung at 0 searches `beam_size` beams, a rung above 0
        samples `best_of` candidates)."""
        return sum(self.beam_size if t == 0 else self.best_of for t in self.ladder)


# What profiles and `decode.<name>` attributes may set; word_timestamps follows the session attribute.
DECODE_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(DecodeOptions) if f.name != "word_timestamps")
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


_NULL_WORDS = frozenset({"null", "none", "~", ""})
_TRUE_WORDS = frozenset({"true", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "no", "off"})


def _scalar(text: str) -> Any:
    """One flat value as YAML would read it (null, a boolean, an integer, a finite float), else the text."""
    word = text.strip()
    lowered = word.lower()
    if lowered in _NULL_WORDS:
        return None
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    try:
        return int(word)
    except ValueError:
        pass
    try:
        number = float(word)
    except ValueError:
        return word
    return number if math.isfinite(number) else word


def _parse_text_value(key: str, text: Any) -> Any:
    """Session attribute values are strings: a flat scalar, or for a ladder a flat list written
    "0.0,0.2,0.4" or "[0.0, 0.2, 0.4]". Prompt-like options keep the raw text ("no" stays "no").
    Nothing is parsed as a document, so nesting and aliases cannot cost anything; too long a value
    is returned as it is, to be refused by the field's check."""
    spec = _SPECS[key]
    if not isinstance(text, str) or spec.base is str or len(text) > MAX_VALUE_CHARS:
        return text
    body = text.strip()
    if spec.ladder and body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
        return [_scalar(part) for part in body.split(",")] if body.strip() else []
    if spec.ladder and "," in body:
        return [_scalar(part) for part in body.split(",")]
    return _scalar(body)


def apply_overrides(base: DecodeOptions, overrides: Mapping[str, Any], where: str) -> DecodeOptions:
    """Return `base` with `overrides` (option name -> string value, as sent by a client) applied."""
    for key in overrides:
        if key not in _SPECS:
            raise _unknown(key, where)
    parsed = {key: _parse_text_value(key, text) for key, text in overrides.items()}
    return replace(base, **_validated(parsed, where))
