"""The query options of a Deepgram-style `/v1/listen` URL, read and bounded where they enter.

Deepgram refuses options it does not know, and so does this door (ERR1010 naming the option). Every
option is one of: taken (it changes what the stream does), accepted with no effect here (a Whisper
transcript is already formatted and punctuated; documented in docs/websocket.md), or accepted only
with the value that asks for nothing (`diarize=false`). Deepgram's model names (nova-3, nova-2, ...)
mean the default model, as `whisper-1` does on the OpenAI route; a loaded model id picks that model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from appliance.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from appliance.errors import ApplianceError

MAX_QUERY_CHARS = 4096
MAX_PARAMETERS = 64
MAX_VALUE_CHARS = 256
MAX_TERMS = 100  # keywords + keyterm
MAX_TERM_CHARS = 100
MAX_CHANNELS = 8
ENDPOINTING_MIN_MS = 200  # shorter pauses cut words in two: Whisper needs whole words for a final
ENDPOINTING_MAX_MS = 10_000  # the session's vad_silence_sec bound
UTTERANCE_END_MS = (1000, 10_000)
ENCODINGS = ("linear16",)
# Opus in a container (Ogg or WebM, told apart by their first bytes; appliance/audio_stream). Deepgram
# reads containers with no encoding given; its older docs name Ogg Opus `opus`, its newer `ogg-opus`.
CONTAINER_ENCODINGS = ("opus", "ogg-opus", "webm-opus")
OPUS_RATE_HZ = 48_000
# Deepgram's model families (and OpenAI's whisper names): each means the default model here.
DEEPGRAM_MODEL_PREFIXES = ("nova", "enhanced", "base", "whisper", "general", "phonecall", "meeting")
ACCEPTED_NO_EFFECT = frozenset({"smart_format", "profanity_filter", "numerals", "filler_words", "no_delay",
                                "mip_opt_out", "tag", "dictation", "measurements", "version", "extra"})
ONLY_FALSE = frozenset({"diarize", "multichannel", "detect_entities", "redact", "paragraphs", "utterances"})
TAKEN = frozenset({"encoding", "sample_rate", "channels", "language", "model", "interim_results", "endpointing",
                   "utterance_end_ms", "vad_events", "punctuate", "keywords", "keyterm"})
REPEATABLE = frozenset({"keywords", "keyterm", "tag", "extra", "redact"})
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_MODEL = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def _refuse(message: str) -> ApplianceError:
    return ApplianceError("ERR1010", message)


@dataclass(frozen=True)
class LiveOptions:
    sample_rate_hz: int  # of linear16 audio; a container's is in its header (OPUS_RATE_HZ here)
    container: bool = False  # Opus in Ogg or WebM, not raw linear16
    channels: int = 1
    language: str = ""  # a Whisper code, "" to detect
    model_id: str = ""  # "" = the default model
    interim_results: bool = False
    endpointing_ms: int | None = None  # None: the server's vad.silence
    speech_final: bool = True  # endpointing=false: finals still come at pauses, never marked speech_final
    utterance_end_ms: int | None = None
    vad_events: bool = False
    punctuate: bool = True
    hotwords: tuple[str, ...] = field(default_factory=tuple)
    model_name: str = ""  # as the client named it (echoed in Metadata)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _refuse(f"{name}={raw!r}: expected true or false")


def _int(name: str, raw: str, low: int, high: int) -> int:
    if not raw.strip().isdigit() or len(raw.strip()) > 9:
        raise _refuse(f"{name}={raw!r}: expected a whole number in {low}-{high}")
    value = int(raw)
    if not low <= value <= high:
        raise _refuse(f"{name}={value}: expected {low}-{high}")
    return value


def _language(raw: str) -> str:
    """Deepgram's BCP-47 tags ("en-US") as Whisper's codes ("en"); "multi" detects."""
    value = raw.strip()
    if value.lower() == "multi" or not value:
        return ""
    if not _LANGUAGE.fullmatch(value):
        raise _refuse(f"language={raw[:40]!r}: expected a language tag such as en or en-US, or multi")
    return value.split("-", 1)[0].lower()


def _model(raw: str, loaded: tuple[str, ...]) -> str:
    value = raw.strip()
    if value in loaded:
        return value
    if _MODEL.fullmatch(value) and value.lower().startswith(DEEPGRAM_MODEL_PREFIXES):
        return ""
    raise ApplianceError("ERR1011", f"model={raw[:60]!r} is neither a Deepgram model name (nova-3, nova-2, ...: "
                         f"the default model) nor a loaded model (loaded: {', '.join(loaded)})")


def _terms(values: list[str]) -> tuple[str, ...]:
    """keywords ("word:boost") and keyterm ("a phrase") as hotwords; the boost is not used."""
    terms = []
    for raw in values:
        term = raw.rsplit(":", 1)[0] if re.search(r":-?[0-9.]+$", raw) else raw
        term = " ".join(term.split())
        if not term:
            continue
        if len(term) > MAX_TERM_CHARS or not term.isprintable():
            raise _refuse(f"keyword/keyterm of {len(term)} characters refused: expected 1-{MAX_TERM_CHARS} "
                          "printable characters")
        terms.append(term)
    if len(terms) > MAX_TERMS:
        raise _refuse(f"{len(terms)} keywords/keyterms: at most {MAX_TERMS} are accepted")
    return tuple(dict.fromkeys(terms))


def _pairs(query: str) -> dict[str, list[str]]:
    if len(query) > MAX_QUERY_CHARS:
        raise _refuse(f"query string of {len(query)} characters: at most {MAX_QUERY_CHARS} are accepted")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                          max_num_fields=MAX_PARAMETERS)
    except ValueError as err:
        raise _refuse(f"malformed query string ({str(err)[:80]}); at most {MAX_PARAMETERS} parameters") from None
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        if len(value) > MAX_VALUE_CHARS:
            raise _refuse(f"{name[:40]}: value of {len(value)} characters, at most {MAX_VALUE_CHARS}")
        found.setdefault(name, []).append(value)
    for name, values in found.items():
        if name not in TAKEN | ACCEPTED_NO_EFFECT | ONLY_FALSE:
            raise _refuse(f"unknown option {name[:40]!r}; this server takes: {', '.join(sorted(TAKEN))} "
                          "(and accepts Deepgram's formatting options; see docs/websocket.md)")
        if len(values) > 1 and name not in REPEATABLE:
            raise _refuse(f"option {name!r} given {len(values)} times; give it once")
    return found


def _encoding(one: dict[str, str]) -> tuple[bool, int]:
    """(containerized, sample rate): raw linear16 needs its rate; a container (encoding left out, as
    Deepgram's clients do for containerized audio, or an Opus name) carries its own."""
    encoding = one.get("encoding", "").strip().lower()
    rate = one.get("sample_rate")
    if (not encoding and rate is None) or encoding in CONTAINER_ENCODINGS:
        if rate is not None and rate.strip() != str(OPUS_RATE_HZ):
            raise _refuse(f"encoding={encoding or '(none)'} with sample_rate={rate[:20]!r}: Opus in Ogg or WebM "
                          f"decodes at {OPUS_RATE_HZ} Hz from its own header; leave sample_rate out (raw PCM is "
                          "encoding=linear16 with its sample_rate)")
        return True, OPUS_RATE_HZ
    if not encoding:
        raise _refuse("sample_rate without encoding: raw PCM needs encoding=linear16 as well; containerized audio "
                      "(Opus in Ogg or WebM) leaves both encoding and sample_rate out")
    if encoding not in ENCODINGS:
        raise _refuse(f"encoding={one.get('encoding', '')[:40]!r}: this server takes raw audio as "
                      f"encoding={' or '.join(ENCODINGS)} with sample_rate, or Opus in Ogg or WebM with no "
                      "encoding (or encoding=opus) and no sample_rate")
    if rate is None:
        raise _refuse("sample_rate is required with encoding=linear16 (e.g. sample_rate=16000)")
    return False, _int("sample_rate", rate, MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ)


def parse_options(query: str, loaded_models: tuple[str, ...]) -> LiveOptions:
    """The options of a `/v1/listen` query string; ERR1010 (ERR1011 for the model) naming the one refused."""
    found = _pairs(query)
    one = {name: values[-1] for name, values in found.items()}
    for name in ONLY_FALSE & set(one):
        if any(_bool(name, value) for value in found[name]):
            raise _refuse(f"{name}=true is not supported by this server (a Whisper appliance); leave it out")
    container, sample_rate_hz = _encoding(one)
    endpointing = one.get("endpointing", "").strip().lower()
    endpointing_ms = None
    if endpointing and endpointing not in _FALSE | _TRUE:
        endpointing_ms = max(ENDPOINTING_MIN_MS, _int("endpointing", endpointing, 0, ENDPOINTING_MAX_MS))
    interim = _bool("interim_results", one["interim_results"]) if "interim_results" in one else False
    utterance_end = None
    if "utterance_end_ms" in one:
        utterance_end = _int("utterance_end_ms", one["utterance_end_ms"], *UTTERANCE_END_MS)
    return LiveOptions(
        sample_rate_hz=sample_rate_hz,
        container=container,
        channels=_int("channels", one["channels"], 1, MAX_CHANNELS) if "channels" in one else 1,
        language=_language(one.get("language", "")),
        model_id=_model(one["model"], loaded_models) if "model" in one else "",
        model_name=one.get("model", "")[:128],
        interim_results=interim,
        endpointing_ms=endpointing_ms,
        speech_final=endpointing not in _FALSE,
        utterance_end_ms=utterance_end,
        vad_events=_bool("vad_events", one["vad_events"]) if "vad_events" in one else False,
        punctuate=_bool("punctuate", one["punctuate"]) if "punctuate" in one else True,
        hotwords=_terms(found.get("keywords", []) + found.get("keyterm", [])),
    )
