"""The OpenAI-compatible routes: POST /v1/audio/transcriptions and /v1/audio/translations (multipart
uploads), GET /v1/models and /v1/models/{model_id}.

Thin: the form is read and bounded here, then `FileTranscriber` runs the upload as a stream and
`transcript_formats` shapes the answer. The bearer token is the session's api_key, checked by the
same admission as a gRPC CreateSession; refusals keep the plane's {code, message} body and add
OpenAI's {"error": {...}} object beside it (see app.py), so either kind of client reads them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import falcon

from appliance.errors import ApplianceError
from appliance.file_transcriber import FileTranscriber
from appliance.frontdoor import client_address, peer_label
from appliance.model_admin import ModelAdmin
from appliance.observability.log_guard import ThrottledLog
from appliance.streaming.session import SessionRequest
from appliance.transcript_formats import RESPONSE_FORMATS, render

log = logging.getLogger(__name__)
refusals = ThrottledLog(log)

DEFAULT_MODEL_ALIAS = "whisper-1"  # what OpenAI clients send by habit: the appliance's default model
MAX_FIELD_CHARS = 64
MAX_PROMPT_CHARS = 1024
GRANULARITIES = ("segment", "word")
_FIELDS = {
    "transcribe": ("file", "model", "language", "prompt", "temperature", "response_format",
                   "timestamp_granularities[]", "timestamp_granularities"),
    "translate": ("file", "model", "prompt", "temperature", "response_format"),
}


@dataclass
class UploadForm:
    file: bytes | None = None
    model: str = ""
    language: str = ""
    prompt: str = ""
    temperature: str = ""
    response_format: str = "json"
    granularities: list[str] = field(default_factory=list)


def read_form(req: falcon.Request, task: str) -> UploadForm:
    """The multipart form's fields, each once, each within its bound (ERR1010/ERR1003 otherwise)."""
    content_type = (req.content_type or "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ApplianceError("ERR1010", f"Content-Type {content_type[:64]!r}: expected multipart/form-data with a "
                             "'file' part", http_status=415)
    allowed = _FIELDS[task]
    form, seen = UploadForm(), set()
    for part in req.get_media():
        name = part.name or ""
        if name not in allowed:
            raise ApplianceError("ERR1010", f"unknown form field {name[:64]!r} (accepted: {', '.join(allowed)})")
        if name.startswith("timestamp_granularities"):
            form.granularities.append(_text(part, name, MAX_FIELD_CHARS))
            if len(form.granularities) > len(GRANULARITIES):
                raise ApplianceError("ERR1010", "timestamp_granularities[] given more than twice")
            continue
        if name in seen:
            raise ApplianceError("ERR1010", f"form field {name!r} given twice")
        seen.add(name)
        if name == "file":
            form.file = part.stream.read()  # bounded: the whole body is within openai.max_upload_bytes
        else:
            setattr(form, name, _text(part, name, MAX_PROMPT_CHARS if name == "prompt" else MAX_FIELD_CHARS))
    if form.file is None:
        raise ApplianceError("ERR1003", "the form has no 'file' part (the audio to transcribe)")
    return form


def _text(part, name: str, max_chars: int) -> str:
    """A text field whatever content type its part declares; the prompt may span lines."""
    try:
        value = part.data.decode("utf-8")  # part.data is bounded by the form's per-part buffer (64 KiB)
    except UnicodeDecodeError:
        raise ApplianceError("ERR1010", f"form field {name!r} is not UTF-8 text") from None
    if len(value) > max_chars:
        raise ApplianceError("ERR1010", f"form field {name!r} has {len(value)} characters; at most {max_chars} "
                             "are accepted")
    visible = value.replace("\n", " ").replace("\r", " ").replace("\t", " ") if name == "prompt" else value
    if not visible.isprintable():
        raise ApplianceError("ERR1010", f"form field {name!r} holds control characters")
    return value.strip()


def session_request(form: UploadForm, task: str, api_key: str | None) -> SessionRequest:
    """The upload as a batch session: the form's options become the session's attributes."""
    if form.response_format not in RESPONSE_FORMATS:
        raise ApplianceError("ERR1010", f"response_format {form.response_format!r} is unknown "
                             f"(accepted: {', '.join(RESPONSE_FORMATS)})")
    for granularity in form.granularities:
        if granularity not in GRANULARITIES:
            raise ApplianceError("ERR1010", f"timestamp_granularities[] {granularity!r} is unknown "
                                 f"(accepted: {', '.join(GRANULARITIES)})")
        if form.response_format != "verbose_json":
            raise ApplianceError("ERR1010", "timestamp_granularities[] needs response_format=verbose_json")
    attributes = {"upload_mode": "batch"}
    if "word" in form.granularities:
        attributes["word_timestamps"] = "true"
    if api_key:
        attributes["api_key"] = api_key
    if form.prompt:
        attributes["decode.initial_prompt"] = form.prompt
    if form.temperature:
        attributes["decode.temperature"] = _temperature(form.temperature)
    model_id = "" if form.model in ("", DEFAULT_MODEL_ALIAS) else form.model
    return SessionRequest(attributes=attributes, vad_mode="continue", language=form.language, task=task,
                          model_id=model_id, protocol="openai")


def _temperature(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ApplianceError("ERR1010", f"temperature {text[:16]!r}: expected a number from 0 to 1")
    return repr(value)


def bearer_key(authorization: str | None) -> str | None:
    """The api_key of `Authorization: Bearer <key>`; None without the header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApplianceError("ERR1004", "malformed Authorization header; expected 'Bearer <api key>'")
    return token.strip()


class AudioUpload:
    """POST /v1/audio/transcriptions (task transcribe) and /v1/audio/translations (translate)."""

    def __init__(self, transcriber: FileTranscriber, task: str, *, signed_tokens: bool, max_body_bytes: int):
        self._transcriber = transcriber
        self._task = task
        self._signed_tokens = signed_tokens
        self.max_body_bytes = max_body_bytes  # read by AccessMiddleware before the body is

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._answer(req, resp)
        except ApplianceError as err:
            refusals.info(err.code, "OpenAI upload refused: %s", err)
            raise

    def _answer(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._signed_tokens:
            raise ApplianceError("ERR1004", "this server requires signed tokens on every session "
                                 "(auth.create_session_auth_profile=signed_token), which the OpenAI API "
                                 "cannot carry; use the gRPC API")
        api_key = bearer_key(req.get_header("Authorization"))
        form = read_form(req, self._task)
        request = session_request(form, self._task, api_key)
        assert form.file is not None
        # waitress tells whether the client has hung up (it reads on while the request is answered).
        disconnected = req.env.get("waitress.client_disconnected") or _connected
        peer = peer_label(client_address(req.context.client_ip))
        transcription = self._transcriber.transcribe(form.file, request, peer, disconnected)
        content_type, body = render(transcription, form.response_format,
                                    tuple(dict.fromkeys(form.granularities)) or ("segment",))
        resp.content_type = content_type
        if isinstance(body, dict):
            resp.media = body
        else:
            resp.text = body


class Models:
    """GET /v1/models: the loaded models in OpenAI's list shape (no auth: Wyoming's describe tells as much)."""

    def __init__(self, admin: ModelAdmin):
        self._admin = admin

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"object": "list", "data": [_model(m) for m in self._models()]}

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model_id: str) -> None:
        model = next((m for m in self._models() if m["model_id"] == model_id), None)
        if model is None:
            raise ApplianceError("ERR1011", f"model {model_id[:64]!r} is not loaded")
        resp.media = _model(model)

    def _models(self) -> list[dict]:
        return [m for m in self._admin.listing()["models"] if m["state"] == "loaded"]


def _model(model: dict) -> dict:
    return {"id": model["model_id"], "object": "model", "created": int(model["loaded_at"]),
            "owned_by": "stt-appliance"}


def _connected() -> bool:
    return False


def openai_routes(transcriber: FileTranscriber, admin: ModelAdmin, *, signed_tokens: bool,
                  max_body_bytes: int):
    """Mounts the /v1 routes on a plane (create_client_app's `add_routes`)."""
    def add(app: falcon.App) -> None:
        for path, task in (("/v1/audio/transcriptions", "transcribe"), ("/v1/audio/translations", "translate")):
            app.add_route(path, AudioUpload(transcriber, task, signed_tokens=signed_tokens,
                                            max_body_bytes=max_body_bytes))
        models = Models(admin)
        app.add_route("/v1/models", models)
        app.add_route("/v1/models/{model_id}", models, suffix="one")
    return add
