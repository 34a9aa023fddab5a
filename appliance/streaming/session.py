"""Sessions: resolving a CreateSession request into settings.

Which sessions are live, and where they stream, is the session table's (`appliance.session_table`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.decode_options import DecodeOptionError, DecodeOptions, apply_overrides
from appliance.errors import ApplianceError
from appliance.languages import WHISPER_LANGUAGES

VAD_MODES = ("continue", "auto")
# Client-chosen session ids reach logs, metrics hashes and file names: short and plain only.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
TASKS = ("transcribe", "translate")
UPLOAD_MODES = ("realtime", "batch")
# Attributes reach tickets, logs and the decoder: a handful of short entries is all any client needs.
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 2048  # a 2000-character prompt fits
MAX_NAME_CHARS = 64  # language, model_id, decode_profile
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class SessionRequest:
    """What a client asks for; transport-neutral mirror of stt.v1.SessionRequest."""

    session_id: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    vad_mode: str = ""  # "" = server default
    vad_silence_sec: float | None = None
    vad_threshold: float | None = None
    language: str = ""
    task: str = ""
    decode_profile: str = ""
    model_id: str = ""
    require_token: bool = False
    protocol: str = "grpc"  # set by the transport, never by the client: the metrics' protocol label


@dataclass(frozen=True)
class SessionSettings:
    """Everything a stream needs, resolved and validated once at CreateSession."""

    session_id: str
    model_id: str
    decode_profile: str
    decode_options: DecodeOptions
    language: str | None
    task: str
    vad_mode: str
    vad_silence_sec: float
    vad_threshold: float
    partials: bool
    emit_final_on_vad: bool
    upload_mode: str
    token: str  # the session ticket (appliance.security.tickets), set once the session is admitted
    attributes: dict[str, str]
    require_token: bool = False  # every chunk carries the ticket, not only the first
    protocol: str = "grpc"  # the transport that opened it (SessionRequest.protocol)
    speech_events: bool = False  # attribute speech_events: results marking where the VAD opens and closes
    word_timestamps: bool = False  # attribute word_timestamps: finals carry a timing for each word
    pause_context: bool = False  # attribute pause_context: a short pause keeps the previous final as prompt
    resumable: bool = False  # attribute resumable: checkpoints keep the client's resume ticket fresh

    @property
    def decode_overridden(self) -> bool:
        """The session set decode options of its own (attributes decode.*)."""
        return any(key.startswith("decode.") for key in self.attributes)


def parse_bool_attribute(attributes: dict[str, str], key: str, default: bool) -> bool:
    raw = attributes.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApplianceError("ERR1010", f"attribute {key}={raw!r}: expected true or false")


@dataclass(frozen=True)
class ModelTraits:
    """What CreateSession checks a request against, per loaded model."""

    english_only: bool
    max_prompt_tokens: int
    count_tokens: Callable[[str], int]
    languages: tuple[str, ...] = ()  # model.languages as the model holds it (Backend.languages); () = any


@dataclass
class SessionDefaults:
    """The server-side defaults a request falls back to (from AppConfig), and the policy a session's
    own choices are held to."""

    default_model_id: str
    model_ids: tuple[str, ...]
    decode_profiles: dict[str, DecodeOptions]
    default_decode_profile: str
    language: str | None
    task: str
    vad_silence_sec: float
    vad_threshold: float
    emit_final_on_vad: bool
    client_overrides: frozenset[str] | None = None  # decode options a session may set (None: all)
    max_client_work: int = 10  # DecodeOptions.work() allowed after a session's overrides
    model_traits: Callable[[str], ModelTraits | None] = lambda model_id: None


def _check_shape(request: SessionRequest) -> None:
    """Sizes first: nothing below should spend work on a request too large to be honest."""
    attributes = request.attributes
    if len(attributes) > MAX_ATTRIBUTES:
        raise ApplianceError("ERR1010", f"{len(attributes)} attributes; at most {MAX_ATTRIBUTES} are accepted")
    for key, value in attributes.items():
        if not 0 < len(key) <= MAX_ATTRIBUTE_KEY_CHARS or not key.isprintable():
            raise ApplianceError("ERR1010", f"attribute name of {len(key)} characters refused: expected 1-"
                                 f"{MAX_ATTRIBUTE_KEY_CHARS} printable characters")
        if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise ApplianceError("ERR1010", f"attribute {key!r} has {len(value)} characters; at most "
                                 f"{MAX_ATTRIBUTE_VALUE_CHARS} are accepted")
    for name in ("language", "model_id", "decode_profile"):
        value = getattr(request, name)
        if len(value) > MAX_NAME_CHARS or not value.isprintable():
            raise ApplianceError("ERR1010", f"{name} of {len(value)} characters refused: expected at most "
                                 f"{MAX_NAME_CHARS} printable characters")


def _decode_options(base: DecodeOptions, attributes: dict[str, str], defaults: SessionDefaults) -> DecodeOptions:
    """The profile's options with the session's `decode.*` overrides, within the operator's policy."""
    overrides = {k[len("decode."):]: v for k, v in attributes.items() if k.startswith("decode.")}
    if not overrides:
        return base
    allowed = defaults.client_overrides
    refused = sorted(set(overrides) - allowed) if allowed is not None else []
    try:
        options = apply_overrides(base, overrides, where="attributes decode")
    except DecodeOptionError as err:
        raise ApplianceError("ERR1010", str(err)) from err
    if refused:
        raise ApplianceError("ERR1010", f"decode option(s) {', '.join(refused)} may not be set by a session on "
                             f"this server (decode.client_overrides: {', '.join(sorted(allowed or ())) or 'none'})")
    limit = max(defaults.max_client_work, base.work())
    if options.work() > limit:
        raise ApplianceError(
            "ERR1010", f"decode options would cost up to {options.work()} greedy decodes per decode "
            f"(beam_size for a temperature of 0, best_of for each rung above 0, summed over the ladder); "
            f"this server allows {limit} (decode.max_client_work)")
    return options


def _check_model_fit(settings: SessionSettings, traits: ModelTraits | None) -> None:
    """Language, task and prompt length against the model that will serve the session."""
    if settings.language is not None and settings.language not in WHISPER_LANGUAGES:
        raise ApplianceError("ERR1010", f"language {settings.language!r} is not a Whisper language code "
                             "(e.g. en, de, fr, ja; empty to detect)")
    if traits is None:
        return
    if settings.language is not None and traits.languages and settings.language not in traits.languages:
        raise ApplianceError("ERR1010", f"language {settings.language!r} is not one this server decodes in "
                             f"(model.languages: {', '.join(traits.languages)}; empty to detect among them)")
    if traits.english_only and (settings.language not in (None, "en") or settings.task == "translate"):
        asked = f"language {settings.language!r}" if settings.task != "translate" else "task 'translate'"
        raise ApplianceError("ERR1010", f"{asked} needs a multilingual model; {settings.model_id} is English-only "
                             "(pick a multilingual model_id, see /admin/models)")
    options = settings.decode_options
    prompt_tokens = sum(traits.count_tokens(text) for text in (options.initial_prompt, options.hotwords) if text)
    if prompt_tokens > traits.max_prompt_tokens:
        raise ApplianceError("ERR1010", f"decode.initial_prompt and decode.hotwords take {prompt_tokens} tokens "
                             f"together; {settings.model_id} accepts at most {traits.max_prompt_tokens}")


def resolve_settings(request: SessionRequest, defaults: SessionDefaults) -> SessionSettings:
    """Validate a request against the server's defaults; every refusal names the field."""
    _check_shape(request)
    attributes = dict(request.attributes)
    if request.session_id and not SESSION_ID_RE.fullmatch(request.session_id):
        raise ApplianceError("ERR1010", f"session_id of {len(request.session_id)} characters refused: expected 1-128 "
                             "letters, digits, '.', '_', ':' or '-', starting with a letter or digit (or leave it "
                             "empty for a server-generated id)")
    model_id = request.model_id or defaults.default_model_id
    if model_id not in defaults.model_ids:
        raise ApplianceError("ERR1011",
                             f"model_id {model_id!r} is not loaded (loaded: {', '.join(defaults.model_ids)})")
    profile = request.decode_profile or defaults.default_decode_profile
    if profile not in defaults.decode_profiles:
        raise ApplianceError(
            "ERR1010", f"decode_profile {profile!r} is unknown (known: {', '.join(sorted(defaults.decode_profiles))})"
        )
    options = _decode_options(defaults.decode_profiles[profile], attributes, defaults)
    vad_mode = request.vad_mode or "continue"
    if vad_mode not in VAD_MODES:
        raise ApplianceError("ERR1010", f"vad_mode {vad_mode!r} is unknown (accepted: {', '.join(VAD_MODES)})")
    task = request.task or defaults.task
    if task not in TASKS:
        raise ApplianceError("ERR1010", f"task {task!r} is unknown (accepted: {', '.join(TASKS)})")
    silence = defaults.vad_silence_sec if request.vad_silence_sec is None else request.vad_silence_sec
    if not 0.05 <= silence <= 10.0:
        raise ApplianceError("ERR1010", f"vad_silence_sec={silence:g}: expected 0.05-10 seconds")
    threshold = defaults.vad_threshold if request.vad_threshold is None else request.vad_threshold
    if not 0.0 < threshold < 1.0:
        raise ApplianceError("ERR1010", f"vad_threshold={threshold:g}: expected a probability between 0 and 1")
    upload_mode = attributes.get("upload_mode", "realtime").strip().lower() or "realtime"
    if upload_mode not in UPLOAD_MODES:
        raise ApplianceError("ERR1010", f"attribute upload_mode={upload_mode!r}: expected realtime or batch")
    language = request.language.strip().lower() or defaults.language
    traits = defaults.model_traits(model_id)
    if not language and traits is not None and len(traits.languages) == 1:
        language = traits.languages[0]  # one listed language is forced, and the session is told so
    settings = SessionSettings(
        session_id=request.session_id or uuid.uuid4().hex,
        model_id=model_id,
        decode_profile=profile,
        decode_options=options,
        language=language or None,
        task=task,
        vad_mode=vad_mode,
        vad_silence_sec=float(silence),
        vad_threshold=float(threshold),
        partials=parse_bool_attribute(attributes, "partial", False),
        speech_events=parse_bool_attribute(attributes, "speech_events", False),
        word_timestamps=parse_bool_attribute(attributes, "word_timestamps", False),
        pause_context=parse_bool_attribute(attributes, "pause_context", False),
        resumable=parse_bool_attribute(attributes, "resumable", False),
        emit_final_on_vad=parse_bool_attribute(attributes, "emit_final_on_vad", defaults.emit_final_on_vad),
        upload_mode=upload_mode,
        token="",
        attributes=attributes,
        require_token=request.require_token,
        protocol=request.protocol,
    )
    _check_model_fit(settings, traits)
    return settings
