"""Typed setting specs: the one validation mechanism behind config keys and decode options.

A setting is a dataclass field declared with `setting(default, help, **rules)`. `field_specs(cls)`
reads each field's type hint and rules into a `FieldSpec`, which checks and normalises a value and
states in words what it accepts. The config sections (`appliance.config_schema`) and the decode
options (`appliance.decode_options`) are both declared this way, and both report a bad value as a
`SettingError` subclass whose message names the key, the value received and what is accepted:
``server.port: expected an integer between 0 and 65535, got 70000``.
"""

from __future__ import annotations

import difflib
import functools
import math
import types
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints


class SettingError(ValueError):
    """A bad setting. `key` names it (a dotted config key or an option name); `message` says why."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def setting(default: Any, help: str, *, factory: Any = None, **rules: Any) -> Any:
    """A dataclass field carrying its help text and rules (the keyword fields of `FieldSpec`)."""
    meta = {"help": help, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


SHOW_MAX_CHARS = 80  # error messages go back to clients and into logs: never echo a whole value


def show(value: Any) -> str:
    """A value as an error message quotes it: YAML spellings for null and booleans, repr otherwise,
    cut to SHOW_MAX_CHARS (a client's 100 KB prompt is not repeated back at it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    if len(text) > SHOW_MAX_CHARS:
        return f"{text[:SHOW_MAX_CHARS]}... ({len(text)} characters)"
    return text


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class FieldSpec:
    """One setting: its type (bool, int, float, str or list of str), default, help and rules."""

    name: str
    base: type
    nullable: bool
    default: Any
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    upper: bool = False  # strings are upper-cased before the choices are checked
    nonempty: bool = False  # strings (and list items) must not be blank
    ladder: bool = False  # a number, or a non-empty list of numbers (a fallback ladder), each in range
    max_items: int | None = None  # the longest ladder or list accepted
    max_chars: int | None = None  # the longest string accepted

    @property
    def _range(self) -> str:
        if self.ge is not None and self.le is not None:
            return f" between {_num(self.ge)} and {_num(self.le)}"
        if self.ge is not None:
            return f" >= {_num(self.ge)}"
        if self.gt is not None:
            return f" > {_num(self.gt)}"
        return ""

    @property
    def expected(self) -> str:
        """What the setting accepts, in words ("an integer >= 1", "one of 'a', 'b' or null")."""
        if self.base is bool:
            text = "true or false"
        elif self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.base is list:
            text = "a list of non-empty strings"
        elif self.base is str:
            text = "a non-empty string" if self.nonempty else "a string"
            if self.max_chars is not None:
                text += f" of at most {self.max_chars} characters"
        else:
            text = ("an integer" if self.base is int else "a number") + self._range
            if self.ladder:
                most = f"at most {self.max_items} " if self.max_items is not None else ""
                text += f", or a non-empty list of {most}numbers{self._range}"
        return text + (" or null" if self.nullable else "")

    def _in_range(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    def _number(self, value: Any) -> tuple[bool, Any]:
        if not _is_number(value) or (self.base is int and not isinstance(value, int)):
            return False, value
        if self.base is float:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond float range (YAML reads 1000 digits as an int)
                return False, value
        return self._in_range(value), value

    def check(self, value: Any) -> tuple[bool, Any]:
        """(True, the normalised value) when `value` is acceptable, else (False, `value`)."""
        if value is None:
            return self.nullable, None
        if self.base is bool:
            return isinstance(value, bool), value
        if self.base is list:
            good = isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
            return good, list(value) if good else value
        if self.base is str:
            if not isinstance(value, str) or (self.nonempty and not value.strip()):
                return False, value
            if self.max_chars is not None and len(value) > self.max_chars:
                return False, value
            value = value.upper() if self.upper else value
            return (self.choices is None or value in self.choices), value
        if self.ladder and isinstance(value, (list, tuple)):
            if self.max_items is not None and len(value) > self.max_items:
                return False, value
            steps = [self._number(v) for v in value]
            good = bool(steps) and all(ok for ok, _ in steps)
            return good, tuple(v for _, v in steps) if good else value
        return self._number(value)

    def coerce(self, label: str, value: Any, origin: str = "", *, error: type[SettingError] = SettingError,
               key: str | None = None) -> Any:
        """The validated (normalised) value; otherwise raises `error(key or label, message)` whose
        message reads "<label>: expected <what is accepted>, got <value>[ (from <origin>)]"."""
        good, out = self.check(value)
        if not good:
            where = f" (from {origin})" if origin else ""
            raise error(label if key is None else key, f"{label}: expected {self.expected}, got {show(value)}{where}")
        if self.base is list and self.nullable and not out:
            return None  # an empty list means the same as null (e.g. model.languages: auto-detect)
        return out


def _base_type(hint: Any) -> tuple[type, bool]:
    """(base type, nullable) of a field's type hint: `int | None` -> (int, True), `list[str]` -> (list, False)."""
    nullable = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        nullable = len(members) < len(get_args(hint))
        hint = members[0]  # `float | tuple[float, ...]` (a ladder) checks as float
    return get_origin(hint) or hint, nullable


@functools.cache
def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The specs of a dataclass declared with `setting(...)` fields, by field name, in field order."""
    hints = get_type_hints(cls)
    specs = {}
    for f in fields(cls):
        base, nullable = _base_type(hints[f.name])
        default = f.default if f.default_factory is MISSING else f.default_factory()
        specs[f.name] = FieldSpec(f.name, base, nullable, default, **f.metadata)
    return specs


def unknown_message(label: str, name: str, allowed: Iterable[str], what: str, origin: str = "") -> str:
    """"<label>: unknown <what>[ in <origin>][ (did you mean 'x'?)]; allowed: a, b, c"."""
    allowed = list(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f" in {origin}" if origin else ""
    return f"{label}: unknown {what}{where}{hint}; allowed: {', '.join(allowed)}"
