"""The OpenAPI 3.0 description of the HTTP plane, served at /openapi.json.

tests/test_http_openapi.py keeps it true: every route of the app is described here and every
response of the running app (fuzzed with schemathesis) matches it. Changes are additive only.
"""

from __future__ import annotations

from appliance import __version__
from appliance.observability.snapshot import StatusSnapshot, StreamLevels, json_schema


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


_REFUSALS = {
    "403": _error("ERR1005: client address outside STT_HTTP_ALLOWLIST (or the admin plane is disabled)"),
    "429": _error("ERR1006: HTTP rate limit; Retry-After says when to retry"),
}
_OBSERVABILITY = {"401": _error("ERR1004: the observability token is required and missing or wrong"), **_REFUSALS}
_ADMIN = {"401": _error("ERR1004: the admin token is missing or wrong"), **_REFUSALS}

_NUMBER_OR_NULL = {"type": "number", "nullable": True}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "pattern": "^ERR[0-9]{4}$"}, "message": {"type": "string"},
            "error": {"type": "object", "description": "On /v1 routes only: the same refusal in OpenAI's error shape",
                      "required": ["message", "type", "code"],
                      "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                     "code": {"type": "string"}, "param": {"type": "string", "nullable": True}}},
        },
    },
    "Health": {
        "type": "object", "required": ["status"],
        "description": "Only `status` for a token-less minimal view; everything for an authorised one.",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "starting", "draining", "stopped"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "decodes": {"type": "object", "properties": {
                "window_sec": {"type": "number"}, "events": {"type": "integer"}, "successes": {"type": "integer"},
                "timeouts": {"type": "integer"}, "failures": {"type": "integer"}, "evaluated": {"type": "boolean"},
                "success_ratio": _NUMBER_OR_NULL, "timeout_ratio": _NUMBER_OR_NULL}},
            "models_loaded": {"type": "integer"},
            "active_sessions": {"type": "integer"},
            "uptime_sec": {"type": "number"},
        },
    },
    "Model": {
        "type": "object",
        "required": ["model_id", "profile_id", "model", "backend", "device", "compute_type", "pool_size", "state"],
        "properties": {
            "model_id": {"type": "string"}, "profile_id": {"type": "string"}, "model": {"type": "string"},
            "backend": {"type": "string"}, "device": {"type": "string"}, "compute_type": {"type": "string"},
            "pool_size": {"type": "integer"}, "source": {"type": "string"}, "load_sec": {"type": "number"},
            "loaded_at": {"type": "number"}, "active_sessions": {"type": "integer"},
            "state": {"type": "string", "enum": ["loaded", "draining"]}, "default": {"type": "boolean"},
        },
    },
    "MetricsSnapshot": json_schema(StatusSnapshot, overrides={
        "models": {"type": "array", "items": _ref("Model")},
        "streams": {"type": "array", "description": "active streams, keyed by a hash of the session id",
                    "items": json_schema(StreamLevels)},
        "recent": {"type": "object", "required": ["count", "points"], "properties": {
                "count": {"type": "integer"}, "final_latency_p50_sec": _NUMBER_OR_NULL,
                "final_latency_p95_sec": _NUMBER_OR_NULL, "rtf_p50": _NUMBER_OR_NULL,
                "points": {"type": "array", "items": {"type": "object", "required": ["t", "latency_sec"],
                                                      "properties": {"t": {"type": "number"},
                                                                     "latency_sec": {"type": "number"},
                                                                     "rtf": {"type": "number"}}}}}},
        "totals": {"type": "object", "properties": {
                "sessions_created": {"type": "integer"},
                "errors_by_code": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    }),
    "System": {
        "type": "object",
        "required": ["appliance", "platform", "hardware", "profile", "models", "memory", "versions"],
        "properties": {
            "appliance": {"type": "object"}, "platform": {"type": "object"}, "hardware": {"type": "object"},
            "profile": {"type": "object", "properties": {"configured": {"type": "string"},
                                                         "chosen": {"type": "string"},
                                                         "warnings": {"type": "array", "items": {"type": "string"}}}},
            "models": {"type": "array", "items": _ref("Model")},
            "model_load_profiles": {"type": "array", "items": {"type": "string"}},
            "default_model_load_profile": {"type": "string"},
            "memory": {"type": "object"}, "limits": {"type": "object"},
            "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "ModelList": {
        "type": "object", "required": ["models", "default_model_id", "profiles", "default_profile"],
        "properties": {
            "models": {"type": "array", "items": _ref("Model")},
            "default_model_id": {"type": "string"},
            "profiles": {"type": "object", "additionalProperties": {"type": "object"}},
            "default_profile": {"type": "string"},
        },
    },
    "LoadModelRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "profile_id": {"type": "string", "minLength": 1, "maxLength": 64,
                           "description": "a key of model_load_profiles (default: model.default_model_load_profile)"},
            "model_id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
                         "description": "id to load it under (default: <device>-<model name>)"},
            "model_size": {"type": "string", "minLength": 1, "maxLength": 256,
                           "description": "model name or local path, overriding the profile's model_size"},
        },
    },
    "LoadModelResponse": {
        "type": "object", "required": ["status", "model"],
        "properties": {"status": {"type": "string", "enum": ["loaded", "already_loaded"]}, "model": _ref("Model")},
    },
    "UnloadModelRequest": {
        "type": "object", "additionalProperties": False, "required": ["model_id"],
        "properties": {"model_id": {"type": "string", "minLength": 1, "maxLength": 64},
                       "drain": {"type": "boolean", "default": False,
                                 "description": "a model in use stops taking sessions and unloads when they end"}},
    },
    "UnloadModelResponse": {
        "type": "object", "required": ["status", "model_id"],
        "properties": {"status": {"type": "string", "enum": ["unloaded", "draining"]}, "model_id": {"type": "string"}},
    },
    "TranscriptionRequest": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "WAV, FLAC, OGG (Vorbis/Opus), MP3, WebM (Opus) or MP4/M4A (AAC), "
                                    "recognised from its bytes"},
            "model": {"type": "string", "maxLength": 64,
                      "description": "a loaded model_id (GET /v1/models); whisper-1 or empty = the default model"},
            "language": {"type": "string", "maxLength": 64, "description": "ISO 639-1 code; empty = detect"},
            "prompt": {"type": "string", "maxLength": 1024, "description": "text the decode continues from"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"],
                                "default": "json"},
            "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["segment", "word"]},
                                          "description": "with verbose_json: segment (default) and/or word"},
        },
    },
    "TranslationRequest": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "as for transcriptions"},
            "model": {"type": "string", "maxLength": 64, "description": "a loaded multilingual model_id"},
            "prompt": {"type": "string", "maxLength": 1024, "description": "English text the decode continues from"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "response_format": {"type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"],
                                "default": "json"},
        },
    },
    "Transcription": {
        "type": "object", "required": ["text"],
        "description": "json: text and usage; verbose_json adds task, language (its name), duration and segments",
        "properties": {
            "text": {"type": "string"},
            "usage": {"type": "object", "properties": {"type": {"type": "string", "enum": ["duration"]},
                                                       "seconds": {"type": "integer"}}},
            "task": {"type": "string", "enum": ["transcribe", "translate"]},
            "language": {"type": "string"},
            "duration": {"type": "number"},
            "segments": {"type": "array", "items": {
                "type": "object", "required": ["id", "start", "end", "text"],
                "properties": {"id": {"type": "integer"}, "start": {"type": "number"}, "end": {"type": "number"},
                               "text": {"type": "string"}}}},
            "words": {"type": "array", "description": "timestamp_granularities[]=word: every word of text, in order",
                      "items": {"type": "object", "required": ["word", "start", "end"],
                                "properties": {"word": {"type": "string"}, "start": {"type": "number"},
                                               "end": {"type": "number"}}}},
        },
    },
    "OpenAIModel": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
                       "created": {"type": "integer"}, "owned_by": {"type": "string"}},
    },
    "OpenAIModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"type": "string", "enum": ["list"]},
                       "data": {"type": "array", "items": _ref("OpenAIModel")}},
    },
}

_TRANSCRIPT_TYPES = {
    "application/json": {"schema": _ref("Transcription")},
    "text/plain": {"schema": {"type": "string"}},
    "application/x-subrip": {"schema": {"type": "string"}},
    "text/vtt": {"schema": {"type": "string"}},
}


def _upload(summary: str, request: str) -> dict:
    return {"post": {
        "summary": summary, "tags": ["openai"], "security": [{"apiKey": []}, {}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _ref(request)}}},
        "responses": {
            "200": {"description": "the transcript in response_format", "content": _TRANSCRIPT_TYPES},
            "400": _error("ERR1003: not decodable audio, another container, or no file part; "
                          "ERR1010: unknown field, bad value, or a language/task the model lacks"),
            "401": _error("ERR1004: the bearer api key is missing, unknown, or the server needs signed tokens"),
            "404": _error("ERR1011: model is not loaded"),
            "413": {"description": "the declared body is over openai.max_upload_bytes: refused by the HTTP server "
                                   "before it is read, with a plain-text body",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "415": _error("ERR1010: the body is not multipart/form-data"),
            "429": _error("ERR1006: HTTP, session or audio byte-rate limit; ERR1013: the upload is over the "
                          "audio caps"),
            "503": _error("ERR1007: uploads or sessions at capacity (Retry-After); ERR1008: VAD pool; ERR1009: "
                          "decode queue full; ERR1014: memory budget; ERR1015: draining"),
            "504": _error("ERR1012: the upload took longer than openai.request_timeout_sec; ERR1009: a decode "
                          "timed out"),
            "500": _error("ERR1016: the decode failed"),
            **{k: v for k, v in _REFUSALS.items() if k != "429"},
        },
    }}


def _get(summary: str, responses: dict, *, tag: str, security: str | None = None) -> dict:
    op = {"summary": summary, "tags": [tag], "responses": responses}
    if security:
        op["security"] = [{security: []}]
    return {"get": op}


def _post(summary: str, request: str, responses: dict) -> dict:
    return {"post": {
        "summary": summary, "tags": ["admin"], "security": [{"adminToken": []}],
        "requestBody": {"required": request == "UnloadModelRequest",
                        "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {**responses, "400": _error("ERR1010: malformed JSON, unknown field or bad value"),
                      "413": _error("ERR1010: the body is over the 64 KiB limit"),
                      "415": _error("ERR1010: the body is not JSON"), **_ADMIN},
    }}


_TITLES = {
    "operator": ("stt-appliance operator plane", "Health, metrics, system information, model administration and "
                 "the status page of the speech-to-text appliance (server.metrics_port). The OpenAI-compatible "
                 "API is on the client plane (openai.port). Errors are always {code, message}."),
    "client": ("stt-appliance client plane", "The OpenAI-compatible transcription API of the speech-to-text "
               "appliance (openai.port). Health and metrics are on the operator plane (server.metrics_port). "
               "Errors are always {code, message}, with OpenAI's error object beside them."),
    "all": ("stt-appliance HTTP planes", "Both planes' routes: the operator plane (server.metrics_port) and the "
            "OpenAI-compatible API (/v1, openai.port). Errors are always {code, message}."),
}


def _on_plane(path: str, plane: str) -> bool:
    if plane == "all" or path == "/openapi.json":
        return True
    return path.startswith("/v1/") == (plane == "client")


def openapi_document(plane: str = "all") -> dict:
    """The document of one plane ("operator", "client") or of both ("all")."""
    document = _document()
    document["info"]["title"], document["info"]["description"] = _TITLES[plane]
    document["paths"] = {path: item for path, item in document["paths"].items() if _on_plane(path, plane)}
    return document


def _document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "", "version": __version__, "description": ""},
        "paths": {
            "/health": _get("Health from the lifecycle and recent decode outcomes", {
                "200": _json(_ref("Health"), "serving and healthy"),
                "503": _json(_ref("Health"), "starting, draining or degraded"),
                "401": _error("ERR1004: the observability token is required (set STT_PUBLIC_HEALTH=minimal "
                              "for a token-less status)"), **_REFUSALS}, tag="observability",
                security="observabilityToken"),
            "/metrics": _get("Prometheus exposition", {
                "200": {"description": "text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_OBSERVABILITY}, tag="observability", security="observabilityToken"),
            "/metrics.json": _get("Levels and recent latency as JSON", {
                "200": _json(_ref("MetricsSnapshot"), "snapshot"), **_OBSERVABILITY},
                tag="observability", security="observabilityToken"),
            "/system": _get("Hardware, chosen profile, models, versions, memory", {
                "200": _json(_ref("System"), "system information"), **_OBSERVABILITY},
                tag="observability", security="observabilityToken"),
            "/openapi.json": _get("This document", {
                "200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}},
                **_REFUSALS}, tag="meta"),
            "/": _get("Status page for a person at the appliance (data is fetched with the observability token)", {
                "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                **_REFUSALS}, tag="meta"),
            "/admin/models": _get("Loaded models and the load profiles", {
                "200": _json(_ref("ModelList"), "models"), **_ADMIN}, tag="admin", security="adminToken"),
            "/admin/load_model": _post("Load a model by load profile; live streams keep running", "LoadModelRequest", {
                "200": _json(_ref("LoadModelResponse"), "loaded (or already loaded under that id)"),
                "409": _error("ERR1017: that model id is loading or draining"),
                "500": _error("ERR1016: the backend failed to load the model"),
                "503": _error("ERR1014: the model would not fit the memory budget")}),
            "/admin/unload_model": _post(
                "Unload a model; refused while in use unless drain=true", "UnloadModelRequest", {
                "200": _json(_ref("UnloadModelResponse"), "unloaded"),
                "202": _json(_ref("UnloadModelResponse"), "draining: unloads when its last stream ends"),
                "404": _error("ERR1011: no such model loaded"),
                "409": _error("ERR1017: in use (without drain), the default model, or already draining")}),
            "/v1/audio/transcriptions": _upload("Transcribe an audio file (OpenAI-compatible)", "TranscriptionRequest"),
            "/v1/audio/translations": _upload("Translate an audio file into English text (multilingual models)",
                                              "TranslationRequest"),
            "/v1/models": _get("Loaded models in OpenAI's list shape", {
                "200": _json(_ref("OpenAIModelList"), "models"), **_REFUSALS}, tag="openai"),
            "/v1/models/{model_id}": {"get": {
                "summary": "One loaded model", "tags": ["openai"],
                "parameters": [{"name": "model_id", "in": "path", "required": True,
                                "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": _json(_ref("OpenAIModel"), "the model"),
                              "404": _error("ERR1011: no such model loaded"), **_REFUSALS}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "observabilityToken": {"type": "http", "scheme": "bearer",
                                       "description": "STT_OBSERVABILITY_TOKEN (only when it is set)"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "STT_ADMIN_TOKEN"},
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "a session api_key, checked as on gRPC CreateSession (auth section)"},
            },
        },
    }
