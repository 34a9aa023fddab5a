"""Stage 1 (attach/gate), in-process: tokens, chunk validation, byte budgets and the audio cap."""

from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.streaming.gate import StreamGate
from appliance.streaming.types import AudioIn
from tests.stages import limits, settings, to_pcm16


def chunk(session, pcm16: bytes, rate_hz: int = 16_000, token: str = "") -> AudioIn:
    return AudioIn(session_id=session.session_id, pcm16=pcm16, sample_rate_hz=rate_hz, session_token=token)


def refused(gate: StreamGate, message: AudioIn) -> ApplianceError:
    with pytest.raises(ApplianceError) as info:
        gate.admit(message)
    return info.value


def test_real_speech_passes_with_its_rate_and_duration(prompt_audio):
    s = settings()
    gate = StreamGate(s, limits())
    pcm16 = to_pcm16(prompt_audio[:1600])
    accepted = gate.admit(chunk(s, pcm16))
    assert accepted is not None and accepted.pcm16 == pcm16 and accepted.sample_rate_hz == 16_000
    assert accepted.duration_sec == pytest.approx(0.1)
    assert gate.audio_sec_received == pytest.approx(0.1)


def test_an_empty_chunk_carries_no_audio_and_a_rate_of_zero_means_the_server_default():
    s = settings()
    gate = StreamGate(s, limits(default_sample_rate_hz=8_000))
    assert gate.admit(chunk(s, b"")) is None
    accepted = gate.admit(chunk(s, b"\0\0" * 800, rate_hz=0))
    assert accepted is not None and accepted.sample_rate_hz == 8_000 and accepted.duration_sec == pytest.approx(0.1)


def test_the_per_session_token_is_checked_on_every_chunk(prompt_audio):
    s = settings(require_token=True)
    gate = StreamGate(s, limits())
    pcm16 = to_pcm16(prompt_audio[:1600])
    assert gate.admit(chunk(s, pcm16, token=s.token)) is not None
    assert refused(gate, chunk(s, pcm16, token="forged")).code == "ERR1005"
    assert refused(gate, chunk(s, b"", token="")).code == "ERR1005"


def test_a_chunk_naming_another_session_is_refused():
    s = settings()
    error = refused(StreamGate(s, limits()), AudioIn(session_id="other", pcm16=b"\0\0", sample_rate_hz=16_000))
    assert error.code == "ERR1003" and "other" in error.message


def test_malformed_chunks_are_err1003():
    s = settings()
    gate = StreamGate(s, limits(max_chunk_ms=200))
    assert refused(gate, chunk(s, b"\0\0\0")).code == "ERR1003"  # odd byte count: not 16-bit PCM
    assert refused(gate, chunk(s, b"\0\0" * 160, rate_hz=4_000)).code == "ERR1003"  # rate outside 8-48 kHz
    assert refused(gate, chunk(s, b"\0\0" * 16_000)).code == "ERR1003"  # 1 s > max_chunk_ms
    assert gate.audio_sec_received == 0


def test_batch_uploads_are_exempt_from_max_chunk_ms():
    s = settings(attributes={"upload_mode": "batch"})
    accepted = StreamGate(s, limits(max_chunk_ms=200)).admit(chunk(s, b"\0\0" * 16_000))
    assert accepted is not None and accepted.duration_sec == pytest.approx(1.0)


def test_the_callers_byte_budget_sees_every_chunk_and_can_refuse_it():
    seen: list[int] = []

    def budget(nbytes: int) -> None:
        seen.append(nbytes)
        if sum(seen) > 6_400:
            raise ApplianceError("ERR1006", "over the byte rate")

    s = settings()
    gate = StreamGate(s, limits(), byte_budget=budget)
    for _ in range(2):
        gate.admit(chunk(s, b"\0\0" * 1600))
    assert refused(gate, chunk(s, b"\0\0" * 1600)).code == "ERR1006"
    assert seen == [3200, 3200, 3200]


def test_the_sessions_audio_cap_is_err1013():
    s = settings()
    gate = StreamGate(s, limits(max_audio_sec_per_session=0.25))
    gate.admit(chunk(s, b"\0\0" * 1600))
    gate.admit(chunk(s, b"\0\0" * 1600))
    error = refused(gate, chunk(s, b"\0\0" * 1600))
    assert error.code == "ERR1013" and "max_audio_seconds_per_session" in error.message


def test_a_batch_upload_has_a_byte_cap_and_realtime_sessions_do_not():
    batch, realtime = settings(attributes={"upload_mode": "batch"}), settings()
    gate = StreamGate(batch, limits(max_batch_upload_bytes=6_400))
    assert gate.paces_byte_rate
    gate.admit(chunk(batch, b"\0\0" * 3200))
    error = refused(gate, chunk(batch, b"\0\0" * 2))
    assert error.code == "ERR1013" and "max_batch_upload_bytes" in error.message
    realtime_gate = StreamGate(realtime, limits(max_batch_upload_bytes=6_400))
    assert not realtime_gate.paces_byte_rate
    for _ in range(3):
        realtime_gate.admit(chunk(realtime, b"\0\0" * 3200))


def test_chunk_messages_are_paced_per_stream_whatever_they_hold():
    now = [0.0]
    gate = StreamGate(settings(), limits(max_chunks_per_sec=10), clock=lambda: now[0])
    assert [gate.chunk_wait_sec() for _ in range(20)] == [0.0] * 20  # the 2 s burst
    assert gate.chunk_wait_sec() == pytest.approx(0.1)
    now[0] += 0.1  # one message's worth of refill
    assert gate.chunk_wait_sec() == 0.0
    assert StreamGate(settings(), limits(max_chunks_per_sec=0)).chunk_wait_sec() == 0.0
