"""The victim's side of an adversarial test: an honest client that must still be served."""

from __future__ import annotations

import socket
import threading
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


class HonestStream:
    """A kiosk speaking at real time in the background while an attack runs; `assert_served` checks
    that its finals all arrived, were right, and came on time (p95 target: 2 s, DESIGN.md)."""

    def __init__(self, address: str, speech, *, limit_sec: float = 2.0):
        self._speech = speech
        self._limit_sec = limit_sec
        self.results: list = []
        self.error: BaseException | None = None
        pcm16, rate_hz = load_pcm16(speech.path)

        def run() -> None:
            try:
                with SttClient(address) as client:
                    session = client.create_session()
                    self.results.extend(client.stream_audio(session, pcm16, rate_hz, realtime=True))
            except BaseException as err:  # reported by assert_served
                self.error = err

        self._thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> HonestStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(timeout=120)

    def assert_served(self) -> None:
        from clients.corpus import wer

        assert self.error is None, f"the honest stream failed: {self.error}"
        finals = [r for r in self.results if r.is_final and r.text]
        assert len(finals) == len(self._speech.sentences), [r.text for r in finals]
        assert wer(self._speech.reference, finals_text(self.results)) <= 0.15
        late = [round(r.latency_sec, 2) for r in finals if r.latency_sec > self._limit_sec]
        assert not late, f"finals later than {self._limit_sec} s: {late}"
