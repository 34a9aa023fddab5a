"""Helpers for the in-process stage tests: real speech as PCM16, settings and limits as the appliance
resolves them from the shipped configuration."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from appliance.config import default_config_paths, load_config
from appliance.runtime import stream_limits
from appliance.security.tickets import TicketSigner
from appliance.sessions import ticket_claims
from appliance.streaming.session import SessionDefaults, SessionRequest, SessionSettings, resolve_settings
from appliance.streaming.types import StreamLimits

TICKETS = TicketSigner("stage-tests")
CONFIG = load_config(*default_config_paths(), env={})
MODEL_ID = "cpu-tiny.en"


@dataclass
class Backlog:
    """What the transcriber tells the segmenter (`DecodeBacklog`), held still: whether a partial
    already waits for a slot, how busy the shared decoders are, and whether one is free to speculate."""

    partial_waiting: bool = False
    decode_demand: float = 0.0
    decode_room: bool = True


def settings(**request) -> SessionSettings:
    """A session as CreateSession would resolve it against the shipped defaults."""
    cfg = CONFIG
    defaults = SessionDefaults(
        default_model_id=MODEL_ID, model_ids=(MODEL_ID,), decode_profiles=cfg.decode_profiles,
        default_decode_profile=cfg.model.default_decode_profile, language=cfg.model.language or None,
        task=cfg.model.task, vad_silence_sec=float(cfg.vad.silence), vad_threshold=float(cfg.vad.threshold),
        emit_final_on_vad=bool(cfg.server.emit_final_on_vad))
    resolved = resolve_settings(SessionRequest(**request), defaults)
    ticket = TICKETS.issue(resolved.session_id, ticket_claims(resolved), "ip:127.0.0.1", ttl_sec=60)
    return replace(resolved, token=ticket)


def limits(**overrides) -> StreamLimits:
    return replace(stream_limits(CONFIG), **overrides)


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def chunks(pcm16: bytes, rate_hz: int, chunk_ms: int = 100) -> list[bytes]:
    step = int(rate_hz * chunk_ms / 1000) * 2
    return [pcm16[i:i + step] for i in range(0, len(pcm16), step)]
