"""The events the handler acts on, built from checked fields: a field of the wrong JSON type (an
object as `language`, a string as `rate`, a boolean as `width`) is refused with ERR1010 here, where
it enters, rather than failing somewhere inside the pipeline or being passed on."""

from __future__ import annotations

from typing import Any

from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk
from wyoming.event import Event
from wyoming.ping import Ping

from appliance.errors import ApplianceError

MAX_TEXT_CHARS = 256  # a model name, a language code, a ping's text


def _wrong(event: Event, key: str, expected: str, value: Any) -> ApplianceError:
    return ApplianceError("ERR1010", f"{event.type} event: {key} must be {expected}, not "
                          f"{type(value).__name__} {str(value)[:16]!r}")


def _text(event: Event, key: str) -> str | None:
    value = event.data.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT_CHARS):
        raise _wrong(event, key, f"a string of at most {MAX_TEXT_CHARS} characters", value)
    return value


def _whole(event: Event, key: str, *, required: bool) -> int:
    value = event.data.get(key)
    if value is None and not required:
        return 0
    if type(value) is not int:  # bool is an int subclass; JSON true is not a sample rate
        raise _wrong(event, key, "a whole number", value)
    return value


def _number(event: Event, key: str) -> float | int | None:
    value = event.data.get(key)
    if value is not None and (type(value) not in (int, float)):
        raise _wrong(event, key, "a number", value)
    return value


def _typed(event: Event, key: str, kind: type, expected: str) -> None:
    value = event.data.get(key)
    if value is not None and not isinstance(value, kind):
        raise _wrong(event, key, expected, value)


def transcribe(event: Event) -> Transcribe:
    _typed(event, "context", dict, "an object")
    _typed(event, "vad_sensitivity", str, "a string")
    for key in ("transcript_names", "transcript_terms"):
        _typed(event, key, list, "a list of strings")
        if not all(isinstance(item, str) for item in event.data.get(key) or ()):
            raise _wrong(event, key, "a list of strings", event.data[key])
    return Transcribe(name=_text(event, "name"), language=_text(event, "language"))


def audio_start(event: Event) -> None:
    """Checks the format it announces (each field when present; the chunks carry their own)."""
    for key in ("rate", "width", "channels"):
        _whole(event, key, required=False)
    _number(event, "timestamp")


def audio_chunk(event: Event) -> AudioChunk:
    _number(event, "timestamp")
    return AudioChunk(rate=_whole(event, "rate", required=True), width=_whole(event, "width", required=True),
                      channels=_whole(event, "channels", required=True), audio=event.payload or b"")


def audio_stop(event: Event) -> None:
    _number(event, "timestamp")


def ping(event: Event) -> Ping:
    return Ping(text=_text(event, "text"))
