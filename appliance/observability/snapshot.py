"""The typed status snapshot: the levels right now, as /metrics, /metrics.json, the OpenAPI document and
the status page all read them.

`StatusSnapshot.to_dict()` is the /metrics.json body; the Prometheus `SnapshotCollector` reads the
fields at scrape time; `json_schema()` derives the OpenAPI schema from the same dataclasses, so the
document cannot drift from what the endpoint returns.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SessionLevels:
    active: int  # created or streaming (they hold the caps)
    streaming: int  # streaming calls in progress
    max: int  # server.max_sessions
    client_ips: int
    resumable: int = 0  # lost their connection, waiting for a resume (server.resume_window_sec)
    by_api_key: dict[str, int] | None = None  # sha256 prefix -> sessions (metrics.expose_api_key_sessions)


@dataclass(frozen=True)
class DecodeLevels:
    queue_depth: int  # eligible decodes waiting for a model slot
    in_flight: int
    slots: int  # model.pool_size
    decodes: int
    batches: int
    partials_dropped: int
    finals_timed_out: int
    failures: int
    decode_sec_total: float
    audio_sec_total: float
    rtf: float | None


@dataclass(frozen=True)
class BufferLevels:
    total_bytes: int
    cap_bytes: int | None


@dataclass(frozen=True)
class MemoryLevels:
    rss_bytes: int
    budget_bytes: int | None
    baseline_bytes: int


@dataclass(frozen=True)
class VadPoolLevels:
    slots: int
    in_use: int
    max: int


@dataclass(frozen=True)
class StreamLevels:
    """One active stream, keyed by a hash of its session id: visible load, no usable ids, no text."""

    stream: str
    protocol: str  # grpc, wyoming or openai
    model_id: str
    partials: bool
    upload_mode: str
    audio_sec: float
    utterances: int
    buffered_bytes: int
    pending_decodes: int
    age_sec: float


@dataclass(frozen=True)
class StatusSnapshot:
    state: str
    health: str
    uptime_sec: float
    sessions: SessionLevels
    decode: DecodeLevels
    buffers: BufferLevels
    memory: MemoryLevels
    vad_pool: VadPoolLevels
    models: list[dict[str, Any]]  # ModelRegistry.snapshot() (schema: Model)
    streams: list[StreamLevels]
    recent: dict[str, Any]  # RecentFinals.summary() (schema: hand-written in the OpenAPI document)
    totals: dict[str, Any]  # ApplianceMetrics.totals()

    def to_dict(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        if body["sessions"]["by_api_key"] is None:
            del body["sessions"]["by_api_key"]
        return body


_SCALARS: dict[Any, dict[str, Any]] = {int: {"type": "integer"}, float: {"type": "number"},
                                       str: {"type": "string"}, bool: {"type": "boolean"}}


def json_schema(cls: type, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """An OpenAPI 3.0 object schema for a snapshot dataclass; `overrides` replace named fields."""
    overrides = overrides or {}
    hints = typing.get_type_hints(cls)
    properties = {}
    required = []
    for f in dataclasses.fields(cls):
        properties[f.name] = overrides.get(f.name) or _schema_of(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "required": required, "properties": properties}


def _schema_of(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return dict(_SCALARS[hint])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        [inner] = [a for a in args if a is not type(None)]
        return _schema_of(inner) | {"nullable": True}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1]) if args[1] is not Any else {}}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0]) if args[0] is not Any else {}}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return json_schema(hint)
    return {}
