"""The client's side of a resume: the audio it keeps, and which failures it re-dials for."""

from __future__ import annotations

import threading

import grpc
import pytest

from clients.resume import AudioTape, AudioTapeGap, ResumePolicy, dropped, worth_retrying

RATE = 16_000


def chunk(sec: float, value: int = 1) -> bytes:
    return value.to_bytes(2, "little", signed=True) * round(sec * RATE)


def read_all(tape: AudioTape, from_sec: float, merge_sec: float = 0.0) -> list[tuple[bytes, float, bool]]:
    tape.finish()
    return list(tape.read(from_sec, threading.Event(), round(merge_sec * RATE)))


def test_a_first_send_keeps_the_callers_chunks_and_a_resend_merges_them_from_mid_chunk():
    tape = AudioTape(RATE, max_kept_sec=60)
    for i in range(10):
        tape.append(chunk(0.1, i))
    first = read_all(tape, 0.0, merge_sec=0.5)
    assert [round(end, 3) for _, end, _ in first] == [round(0.1 * (i + 1), 3) for i in range(10)]
    assert all(first_send for _, _, first_send in first)
    resent = list(tape.read(0.25, threading.Event(), round(0.5 * RATE)))
    assert [round(end, 3) for _, end, _ in resent] == [0.7, 1.0]  # whole chunks, at most 0.5 s a piece
    assert len(resent[0][0]) == 2 * round(0.45 * RATE) and resent[0][0][:2] == (2).to_bytes(2, "little")
    assert not any(first_send for _, _, first_send in resent)  # no new send times for a resend


def test_trimmed_audio_is_gone_and_the_cap_drops_the_oldest_sent_audio():
    tape = AudioTape(RATE, max_kept_sec=1.0)
    for _ in range(5):
        tape.append(chunk(0.1))
    tape.trim(0.3)
    with pytest.raises(AudioTapeGap):
        read_all(tape, 0.2)
    assert read_all(tape, 0.3)[-1][1] == pytest.approx(0.5)
    tape = AudioTape(RATE, max_kept_sec=1.0)
    for _ in range(20):
        tape.append(chunk(0.1))
    assert read_all(tape, 0.0)[0][1] == pytest.approx(0.1)  # unsent audio is never dropped
    with pytest.raises(AudioTapeGap):
        next(tape.read(0.5, threading.Event()))  # 2 s sent, 1 s kept


def test_without_resume_sent_audio_is_not_kept():
    tape, stop = AudioTape(RATE, max_kept_sec=0.0), threading.Event()
    for _ in range(3):
        tape.append(chunk(0.1))
    reader = tape.read(0.0, stop)
    assert [round(next(reader)[1], 3) for _ in range(3)] == [0.1, 0.2, 0.3]
    tape.append(chunk(0.1))
    with pytest.raises(AudioTapeGap):
        next(tape.read(0.0, stop))


def test_a_read_waits_for_the_pacer_and_stops_when_told():
    tape, stop = AudioTape(RATE, max_kept_sec=60), threading.Event()
    reader = tape.read(0.0, stop)
    threading.Timer(0.2, tape.append, args=(chunk(0.1),)).start()
    assert next(reader)[1] == pytest.approx(0.1)
    threading.Timer(0.2, stop.set).start()
    assert list(reader) == []


def test_only_a_lost_connection_or_a_drain_starts_a_resume():
    assert dropped(None, grpc.StatusCode.UNAVAILABLE) and dropped("ERR1015", grpc.StatusCode.UNAVAILABLE)
    assert dropped(None, grpc.StatusCode.INTERNAL)  # a proxy reset the stream
    assert not dropped("ERR1009", grpc.StatusCode.UNAVAILABLE)  # the server's verdict, not the link
    assert not dropped("ERR1003", grpc.StatusCode.INVALID_ARGUMENT)
    assert worth_retrying("ERR1007", grpc.StatusCode.RESOURCE_EXHAUSTED)  # another node may have room
    assert not worth_retrying("ERR1005", grpc.StatusCode.PERMISSION_DENIED)
    policy = ResumePolicy()
    assert [policy.backoff_sec(n) for n in (1, 2, 3, 6)] == [0.2, 0.4, 0.8, 2.0]
