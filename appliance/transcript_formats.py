"""A `Transcription` in the shapes OpenAI's transcription API answers with (its `response_format`):
json, text, srt, vtt and verbose_json. Fields the appliance does not compute (token ids, log
probabilities, compression ratios) are left out rather than filled with made-up values."""

from __future__ import annotations

import math
from typing import Any

from appliance.file_transcriber import Transcription
from appliance.languages import WHISPER_LANGUAGE_NAMES

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
CONTENT_TYPES = {"json": "application/json", "verbose_json": "application/json",
                 "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
                 "vtt": "text/vtt; charset=utf-8"}


def render(transcription: Transcription, response_format: str,
           granularities: tuple[str, ...] = ("segment",)) -> tuple[str, Any]:
    """(content type, body): a dict for the JSON formats, text for the others. verbose_json holds
    `segments` and/or `words` as `granularities` (OpenAI's timestamp_granularities[]) ask."""
    if response_format == "verbose_json":
        return CONTENT_TYPES[response_format], _verbose_json(transcription, granularities)
    return CONTENT_TYPES[response_format], _RENDERERS[response_format](transcription)


def _json(t: Transcription) -> dict:
    return {"text": t.text, "usage": _usage(t)}


def _verbose_json(t: Transcription, granularities: tuple[str, ...]) -> dict:
    body: dict[str, Any] = {"task": t.task, "language": WHISPER_LANGUAGE_NAMES.get(t.language, t.language),
                            "duration": t.duration_sec, "text": t.text}
    if "segment" in granularities or not granularities:
        body["segments"] = [{"id": i, "start": round(s.start_sec, 3), "end": round(s.end_sec, 3), "text": s.text}
                            for i, s in enumerate(t.segments)]
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": w.start_sec, "end": w.end_sec} for w in t.words]
    body["usage"] = _usage(t)
    return body


def _usage(t: Transcription) -> dict:
    return {"type": "duration", "seconds": math.ceil(t.duration_sec)}  # OpenAI bills whole seconds


def _text(t: Transcription) -> str:
    return t.text + "\n"


def _srt(t: Transcription) -> str:
    return "".join(f"{i}\n{_clock(s.start_sec, ',')} --> {_clock(s.end_sec, ',')}\n{s.text}\n\n"
                   for i, s in enumerate(t.segments, start=1))


def _vtt(t: Transcription) -> str:
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start_sec, '.')} --> {_clock(s.end_sec, '.')}\n{s.text}\n\n"
                                  for s in t.segments)


def _clock(seconds: float, decimal_mark: str) -> str:
    """hh:mm:ss,mmm (SubRip) or hh:mm:ss.mmm (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_mark}{millis:03d}"


_RENDERERS = {"json": _json, "text": _text, "srt": _srt, "vtt": _vtt}
