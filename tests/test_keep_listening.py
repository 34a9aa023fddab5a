"""The SDK's keep-listening option (clients/keep_listening.py): a live stream goes on in a new session
each time the server ends one after its idle timeout (ERR1012), with no audio lost at the seam.

The appliance here ends a stream after 2 s without speech (server.session_timeout_sec); sources are
paced in real time, since the server's silence clock is wall time. The microphone client's test of
the same, through a virtual microphone, is in tests/test_mic_client.py.
"""

from __future__ import annotations

import math
import threading
import time

import grpc
import numpy as np
import pytest

from appliance.api import stt_pb2
from clients.audio import load_pcm16
from clients.keep_listening import KeepListening, Reopen, SessionTimeline, reopens_after
from clients.sdk import NO_RESUME, ResumePolicy, SentAudioLog, SttClient, SttError, TimedResult, Word, split_pcm16
from tests import speech
from tests.conftest import serve_in_process
from tests.helpers import normalise

IDLE_TIMEOUT_SEC = 2.0
RATE_HZ = 48_000  # the prompt's own rate (the server resamples)


@pytest.fixture(scope="module")
def idle_server(request):
    return serve_in_process(request, env={"STT_SERVER_SESSION_TIMEOUT_SEC": f"{IDLE_TIMEOUT_SEC:g}"})


@pytest.fixture(scope="module")
def front_center() -> np.ndarray:
    if not speech.FRONT_CENTER_WAV.is_file():
        pytest.skip(f"{speech.FRONT_CENTER_WAV} missing (Debian package alsa-utils)")
    pcm16, rate_hz = load_pcm16(speech.FRONT_CENTER_WAV)
    assert rate_hz == RATE_HZ, rate_hz
    return np.frombuffer(pcm16, dtype="<i2")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE_HZ), dtype="<i2")


def stream_kept_listening(address: str, audio: np.ndarray, *, resume: ResumePolicy | None = None):
    notices: list[Reopen] = []
    with SttClient(address, resume=resume) as client:
        session = client.create_session()
        listen = KeepListening(open_session=client.create_session, on_reopen=notices.append)
        stream = client.send_chunks(session, split_pcm16(audio.tobytes(), RATE_HZ, 100), RATE_HZ,
                                    realtime=True, keep_listening=listen)
        results = list(stream)
    return results, stream, notices


@pytest.mark.parametrize("resume", [None, NO_RESUME], ids=["resuming", "no-resume"])
def test_stream_goes_on_across_two_idle_timeouts_on_one_timeline(idle_server, front_center, resume):
    quiet_sec = 2 * IDLE_TIMEOUT_SEC + 1.0  # two timeouts, then speech inside the third session
    speech_sec = len(front_center) / RATE_HZ
    audio = np.concatenate([front_center, silence(quiet_sec), front_center, silence(1.0)])
    results, stream, notices = stream_kept_listening(idle_server.address, audio, resume=resume)

    finals = [r for r in results if r.is_final]
    assert [normalise(r.text) for r in finals] == ["front center", "front center"], finals
    assert [r.utterance_index for r in finals] == [0, 1]  # indexes count on across sessions
    # Positions stay on the stream's timeline: the second utterance is where it was in the audio.
    assert finals[1].start_sec == pytest.approx(speech_sec + quiet_sec, abs=0.6), finals[1]
    assert math.isfinite(finals[1].latency_sec) and 0 < finals[1].latency_sec < 5
    assert finals[1].session_id == stream.session_ids[-1] != stream.session_ids[0]

    assert stream.reopens >= 2 and len(notices) == stream.reopens
    assert len(set(stream.session_ids)) == len(stream.session_ids) == stream.reopens + 1
    for number, notice in enumerate(notices, start=1):
        assert (notice.previous_session_id, notice.session_id) == tuple(stream.session_ids[number - 1:number + 1])
        assert notice.reopens == number and "no speech" in notice.reason
        assert "\n" not in notice.notice() and "ERR1012" in notice.notice()
    seams = [n.seam_sec for n in notices]
    assert seams == sorted(seams) and seams[0] > 0 and seams[-1] < speech_sec + quiet_sec  # before the speech


def test_without_the_option_the_idle_timeout_still_ends_the_stream(idle_server):
    with SttClient(idle_server.address) as client, pytest.raises(SttError) as ended:
        session = client.create_session()
        list(client.send_chunks(session, split_pcm16(silence(3.0).tobytes(), RATE_HZ, 100), RATE_HZ))
    assert ended.value.code == "ERR1012"


def test_a_stalled_source_ends_the_stream_instead_of_reopening_forever(idle_server):
    """A reopen needs new audio on the call that timed out: a source that stopped delivering gets one
    new session (its call had carried audio), and that session's timeout then ends the stream."""
    def stalls():
        yield silence(0.5).tobytes()
        threading.Event().wait(8.0)  # past two timeouts; the stream has ended by then

    notices: list[Reopen] = []
    started = time.monotonic()
    with SttClient(idle_server.address) as client, pytest.raises(SttError) as ended:
        session = client.create_session()
        listen = KeepListening(open_session=client.create_session, on_reopen=notices.append)
        list(client.send_chunks(session, stalls(), RATE_HZ, keep_listening=listen))
    assert ended.value.code == "ERR1012" and "no audio received" in ended.value.message
    assert len(notices) == 1 and time.monotonic() - started < 15


def test_a_reopen_retries_what_a_later_try_gets_past_and_a_refusal_ends_the_stream(idle_server, front_center):
    audio = np.concatenate([silence(IDLE_TIMEOUT_SEC + 0.6), front_center, silence(0.5)])
    attempts = []
    with SttClient(idle_server.address) as client:
        def flaky_open() -> stt_pb2.SessionResponse:  # the first try meets a server that is not up yet
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                raise SttError("connection refused", status=grpc.StatusCode.UNAVAILABLE)
            return client.create_session()

        listen = KeepListening(open_session=flaky_open)
        stream = client.send_chunks(client.create_session(), split_pcm16(audio.tobytes(), RATE_HZ, 100), RATE_HZ,
                                    keep_listening=listen)
        finals = [r for r in stream if r.is_final]
        assert [normalise(r.text) for r in finals] == ["front center"] and stream.reopens == 1
        assert len(attempts) == 2 and attempts[1] - attempts[0] >= ResumePolicy().first_backoff_sec

        refused = KeepListening(open_session=lambda: client.create_session(vad_silence_sec=99))
        with pytest.raises(SttError) as ended:
            list(client.send_chunks(client.create_session(), split_pcm16(silence(3.0).tobytes(), RATE_HZ, 100),
                                    RATE_HZ, keep_listening=refused))
    assert ended.value.code == "ERR1010"


def test_keep_listening_refuses_what_cannot_work():
    with pytest.raises(TypeError, match="callable"):
        KeepListening(open_session=None)  # type: ignore[arg-type]
    for bad in (0.0, -1.0, 601.0):
        with pytest.raises(ValueError, match="seam_keep_sec"):
            KeepListening(open_session=lambda: stt_pb2.SessionResponse(), seam_keep_sec=bad)


def test_only_an_idle_timeout_on_a_call_that_carried_new_audio_reopens():
    assert reopens_after("ERR1012", True)
    assert not reopens_after("ERR1012", False)
    assert not any(reopens_after(code, True) for code in ("ERR1015", "ERR1007", "ERR1005", None))


def test_a_later_session_maps_its_results_onto_the_stream_timeline():
    result = TimedResult(session_id="s2", utterance_index=0, is_final=True, text="Front center.",
                         committed_text="", unstable_text="", start_sec=0.5, end_sec=1.25, language="en",
                         decode_latency_sec=0.1, model_id="tiny.en", latency_sec=0.3,
                         words=(Word("Front", 0.5, 0.9, 0.9), Word("center.", 0.9, 1.25, 0.8)))
    first = SessionTimeline(stt_pb2.SessionResponse(session_id="s1"))
    assert first.result(result) is result
    later = SessionTimeline(stt_pb2.SessionResponse(session_id="s2"), offset_sec=7.1, first_index=3)
    moved = later.result(result)
    assert (moved.utterance_index, moved.start_sec, moved.end_sec) == (3, 7.6, 8.35)
    assert [(w.start_sec, w.end_sec) for w in moved.words] == [(7.6, 8.0), (8.0, 8.35)]
    assert moved.text == result.text and later.stream_sec(0.25) == pytest.approx(7.35)


def test_the_send_log_of_a_long_stream_forgets_what_no_result_can_name_any_more():
    log = SentAudioLog()
    for chunk in range(1, 101):  # 10 s of 100 ms chunks, sent one second of wall time apart
        log.record(chunk / 10, 1000.0 + chunk)
    log.forget_before(6.0)
    assert len(log) == 41 and log.sent_time_for(6.0) == 1060.0 and log.audio_sent_sec == 10.0
    assert log.latency_sec(7.0, 1100.0) == pytest.approx(30.0)
    log.forget_before(99.0)  # past everything: the last entry stays, for results that end after it
    assert len(log) == 1 and log.sent_time_for(12.0) == 1100.0
