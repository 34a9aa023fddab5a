"""Sessions: resolving a CreateSession request into settings, and the registry of live sessions.

A session is created by CreateSession and lives until its stream ends; a session that is created
but never streamed expires after `server.session_timeout_sec`.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field

from appliance.decode_options import DecodeOptionError, DecodeOptions, apply_overrides
from appliance.errors import ApplianceError

VAD_MODES = ("continue", "auto")
# Client-chosen session ids reach logs, metrics hashes and file names: short and plain only.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
TASKS = ("transcribe", "translate")
UPLOAD_MODES = ("realtime", "batch")
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


@dataclass
class SessionDefaults:
    """The server-side defaults a request falls back to (from AppConfig)."""

    default_model_id: str
    model_ids: tuple[str, ...]
    decode_profiles: dict[str, DecodeOptions]
    default_decode_profile: str
    language: str | None
    task: str
    vad_silence_sec: float
    vad_threshold: float
    emit_final_on_vad: bool


def resolve_settings(request: SessionRequest, defaults: SessionDefaults) -> SessionSettings:
    """Validate a request against the server's defaults; every refusal names the field."""
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
    decode_overrides = {k[len("decode."):]: v for k, v in attributes.items() if k.startswith("decode.")}
    try:
        options = apply_overrides(defaults.decode_profiles[profile], decode_overrides, where="attributes decode")
    except DecodeOptionError as err:
        raise ApplianceError("ERR1010", str(err)) from err
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
    return SessionSettings(
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
        emit_final_on_vad=parse_bool_attribute(attributes, "emit_final_on_vad", defaults.emit_final_on_vad),
        upload_mode=upload_mode,
        token="",
        attributes=attributes,
        require_token=request.require_token,
    )


class SessionRegistry:
    """Live sessions by id. Thread-safe: CreateSession and streams may run on different threads.

    Each session may hold an admission ticket (per-IP / per-key caps); `on_release` gets it back
    exactly once, when the stream ends or an unused session expires.
    """

    def __init__(self, unused_ttl_sec: float, clock=time.monotonic, on_release=None):
        self._unused_ttl_sec = unused_ttl_sec
        self._clock = clock
        self._on_release = on_release
        self._created: dict[str, tuple[SessionSettings, float, object]] = {}
        self._streaming: dict[str, tuple[SessionSettings, object]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire_unused()
            return len(self._created) + len(self._streaming)

    def add(self, settings: SessionSettings, ticket: object = None) -> None:
        with self._lock:
            self._expire_unused()
            if settings.session_id in self._created or settings.session_id in self._streaming:
                raise ApplianceError("ERR1002", f"session_id {settings.session_id!r} is already active")
            self._created[settings.session_id] = (settings, self._clock(), ticket)

    def start_stream(self, session_id: str) -> SessionSettings:
        with self._lock:
            self._expire_unused()
            if session_id in self._streaming:
                raise ApplianceError("ERR1002", f"session {session_id!r} is already streaming")
            entry = self._created.pop(session_id, None)
            if entry is None:
                raise ApplianceError(
                    "ERR1001", f"session {session_id!r} is unknown or expired; call CreateSession first"
                )
            self._streaming[session_id] = (entry[0], entry[2])
            return entry[0]

    def peek(self, session_id: str) -> SessionSettings:
        """A created, not yet streaming session's settings, without attaching to it (ERR1001/1002)."""
        with self._lock:
            self._expire_unused()
            if session_id in self._streaming:
                raise ApplianceError("ERR1002", f"session {session_id!r} is already streaming")
            entry = self._created.get(session_id)
            if entry is None:
                raise ApplianceError(
                    "ERR1001", f"session {session_id!r} is unknown or expired; call CreateSession first")
            return entry[0]

    def ticket(self, session_id: str) -> object:
        with self._lock:
            entry = self._streaming.get(session_id)
            return entry[1] if entry else None

    def end(self, session_id: str) -> None:
        with self._lock:
            streaming = self._streaming.pop(session_id, None)
            created = self._created.pop(session_id, None)
        for entry in (streaming, created):
            if entry is not None:
                self._release(entry[-1])

    def active_ids(self) -> list[str]:
        with self._lock:
            return list(self._streaming)

    def _release(self, ticket: object) -> None:
        if ticket is not None and self._on_release is not None:
            self._on_release(ticket)

    def _expire_unused(self) -> None:
        now = self._clock()
        stale = [sid for sid, (_, created, _) in self._created.items() if now - created > self._unused_ttl_sec]
        for sid in stale:
            self._release(self._created.pop(sid)[2])
