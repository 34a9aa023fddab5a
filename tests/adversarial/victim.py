"""The victim's side of an adversarial test: an honest client that must still be served."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.api import stt_pb2
from clients.audio import load_pcm16
from clients.sdk import SttClient
from tests.conftest import finals_text


def assert_transcribes(address: str, wav: Path, *, session: stt_pb2.SessionResponse | None = None,
                       metadata: Sequence[tuple[str, str]] = (), **session_options) -> None:
    """Stream the "Front Center" prompt through `session` (or a new one) and get its words back."""
    pcm16, rate_hz = load_pcm16(wav)
    with SttClient(address, metadata=metadata) as client:
        session = session or client.create_session(**session_options)
        text = finals_text(list(client.stream_audio(session, pcm16, rate_hz, realtime=False))).lower()
    assert "front" in text and "center" in text, text


def ipv6_loopback_or_skip() -> None:
    """Victims on another client IP connect over ::1 while the attacker uses 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback (::1): the victim needs a second client address")
