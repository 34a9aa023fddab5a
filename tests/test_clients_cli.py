"""Tests of the Python SDK and the file CLIs (clients/).

Three groups:
* pure tests: latency bookkeeping, audio loading, chunking, config errors that stop a
  CLI before it connects;
* SDK wire behaviour against an in-process gRPC server with a scripted servicer
  (session id on the first chunk, token on every chunk, pacing, half-close, error codes);
* `test_appliance_server_*`: the CLIs as real processes against the real appliance
  (fixture `appliance_server` from conftest.py), asserting on normalised text.
  Deselect them with `-k "not appliance_server"`.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import soundfile

from appliance.api import stt_pb2, stt_pb2_grpc
from clients import sdk
from clients.audio import load_pcm16
from clients.cli_common import percentile
from clients.sdk import NODE_HEADER, SentAudioLog, SttClient, SttError, split_pcm16
from tests.helpers import REPO_ROOT, normalise

CLI_TIMEOUT_SEC = 180  # realtime pacing plus a cold first decode on CPU


def run_cli(module: str, *args: str, timeout_sec: float = CLI_TIMEOUT_SEC) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_sec)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def closed_port_address() -> str:
    """An address that refuses connections at once (an unused port, never listened on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


# --- pure: latency bookkeeping ---------------------------------------------------------

def test_sent_audio_log_uses_first_chunk_reaching_end_sec():
    log = SentAudioLog()
    for index in range(5):  # 100 ms chunks sent at t = 10.1, 10.2, ... 10.5
        log.record(audio_end_sec=0.1 * (index + 1), sent_monotonic_sec=10.0 + 0.1 * (index + 1))
    assert log.sent_time_for(0.25) == pytest.approx(10.3)  # inside chunk 2
    assert log.sent_time_for(0.3) == pytest.approx(10.3)  # exactly chunk 2's end
    assert log.sent_time_for(0.0) == pytest.approx(10.1)
    assert log.latency_sec(0.25, received_monotonic_sec=10.8) == pytest.approx(0.5)
    assert log.audio_sent_sec == pytest.approx(0.5)


def test_sent_audio_log_past_everything_sent_uses_last_chunk():
    log = SentAudioLog()
    log.record(0.1, 1.0)
    log.record(0.2, 1.1)
    assert log.sent_time_for(7.5) == 1.1


def test_sent_audio_log_before_any_chunk_has_no_latency():
    log = SentAudioLog()
    assert log.sent_time_for(1.0) is None
    assert np.isnan(log.latency_sec(1.0, received_monotonic_sec=5.0))


def test_percentile_interpolates_like_numpy():
    values = [0.3, 0.1, 0.9, 0.5, 0.7]
    assert percentile(values, 0.95) == pytest.approx(float(np.percentile(values, 95)))
    assert percentile([], 0.5) is None


# --- pure: audio loading and chunking --------------------------------------------------

def test_load_pcm16_mixes_stereo_to_mono_and_keeps_48khz(tmp_path):
    left = np.array([0.5, -0.5, 2.0, 0.25], dtype=np.float32)
    right = np.array([0.0, -0.5, 2.0, -0.25], dtype=np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 48000, subtype="FLOAT")

    pcm16, sample_rate_hz = load_pcm16(path)

    assert sample_rate_hz == 48000
    samples = np.frombuffer(pcm16, dtype="<i2")
    # mean of the channels; 2.0 is clipped to the int16 maximum, not wrapped
    assert samples.tolist() == [8192, -16384, 32767, 0]


def test_load_pcm16_keeps_int16_mono_exact(tmp_path):
    original = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    path = tmp_path / "mono.flac"
    soundfile.write(path, original, 16000, subtype="PCM_16")
    pcm16, sample_rate_hz = load_pcm16(path)
    assert sample_rate_hz == 16000
    assert np.frombuffer(pcm16, dtype="<i2").tolist() == original.tolist()


def test_load_pcm16_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("nope.wav")):
        load_pcm16(tmp_path / "nope.wav")
    text_file = tmp_path / "notes.wav"
    text_file.write_text("not audio")
    with pytest.raises(ValueError, match="cannot read audio file"):
        load_pcm16(text_file)


def test_split_pcm16_cuts_chunk_ms_and_keeps_the_tail():
    pcm16 = bytes(2 * 48000 // 4 + 20)  # 250 ms at 48 kHz plus 10 samples
    chunks = split_pcm16(pcm16, 48000, chunk_ms=100)
    assert [len(c) for c in chunks] == [9600, 9600, 4800 + 20]
    with pytest.raises(ValueError, match="chunk_ms"):
        split_pcm16(pcm16, 48000, chunk_ms=0)


# --- pure: CLI refusals before any connection -------------------------------------------

@pytest.mark.parametrize("module", ["clients.realtime.file", "clients.batch.file"])
def test_cli_missing_audio_file_exits_2_with_message(module, tmp_path):
    missing = tmp_path / "missing.wav"
    done = run_cli(module, str(missing), "--server", closed_port_address(), timeout_sec=60)
    assert done.returncode == 2
    assert "not found" in done.stderr and str(missing) in done.stderr


@pytest.mark.parametrize("module", ["clients.realtime.file", "clients.batch.file"])
def test_cli_unknown_config_key_exits_2_naming_it(module, tmp_path):
    config = tmp_path / "client.yaml"
    config.write_text("audio_path: x.wav\nchunk_ms: 50\nrealtime: false\nbogus_knob: 3\n")
    done = run_cli(module, "-c", str(config), timeout_sec=60)
    assert done.returncode == 2
    assert "bogus_knob" in done.stderr


def test_cli_bad_config_value_exits_2_naming_key(tmp_path):
    config = tmp_path / "client.yaml"
    config.write_text("audio_path: x.wav\nvad_mode: sometimes\n")
    done = run_cli("clients.realtime.file", "-c", str(config), timeout_sec=60)
    assert done.returncode == 2
    assert "vad_mode" in done.stderr and "sometimes" in done.stderr


def test_cli_unreachable_server_exits_2(front_center_wav):
    done = run_cli("clients.realtime.file", str(front_center_wav), "--server", closed_port_address(),
                   timeout_sec=90)
    assert done.returncode == 2
    assert done.stderr.startswith("error: UNAVAILABLE")


# --- SDK against an in-process scripted server -----------------------------------------

class ScriptedServicer(stt_pb2_grpc.SpeechToTextServicer):
    """Records what arrives; answers a partial after 0.3 s of audio and a final on half-close."""

    def __init__(self):
        self.session_requests: list[stt_pb2.SessionRequest] = []
        self.chunks: list[stt_pb2.AudioChunk] = []

    def CreateSession(self, request, context):
        self.session_requests.append(request)
        if request.session_id == "draining":  # a node answers: its header, then its refusal
            context.send_initial_metadata(((NODE_HEADER, "node-s"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "ERR1015: server draining")
        if request.session_id == "no-node":  # a balancer with no node behind it: no header
            context.abort(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
        if request.decode_profile == "bogus":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "ERR1010: decode_profile 'bogus' unknown (known: realtime, accurate)")
        return stt_pb2.SessionResponse(
            session_id=request.session_id or "generated-1",
            session_token="tok-1" if request.require_token else "",
            decode_profile=request.decode_profile or "realtime", vad_silence_sec=0.5)

    def StreamingRecognize(self, request_iterator, context):
        audio_sec = 0.0
        partial_sent = False
        session_id = ""
        for chunk in request_iterator:
            self.chunks.append(chunk)
            session_id = session_id or chunk.session_id
            if session_id == "fail":
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ERR1003: chunk too long: 60000 ms > 30000 ms")
            audio_sec += len(chunk.pcm16) / 2 / chunk.sample_rate_hz
            if audio_sec >= 0.3 and not partial_sent:
                partial_sent = True
                yield stt_pb2.STTResult(session_id=session_id, text="front", committed_text="front",
                                        end_sec=0.3)
        yield stt_pb2.STTResult(session_id=session_id, is_final=True, text="front center",
                                committed_text="front center", end_sec=audio_sec, language="en")


@pytest.fixture
def scripted_server():
    servicer = ScriptedServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_sdk_streams_paced_chunks_with_id_and_token(scripted_server):
    servicer, address = scripted_server
    pcm16 = bytes(2 * 16000 // 2)  # 0.5 s at 16 kHz
    with SttClient(address) as client:
        session = client.create_session("abc", require_token=True, vad_silence_sec=0.4,
                                        attributes={"partial": True})
        start_sec = time.monotonic()
        results = list(client.stream_audio(session, pcm16, 16000, chunk_ms=100, realtime=True))
        elapsed_sec = time.monotonic() - start_sec

    request = servicer.session_requests[0]
    assert request.attributes["partial"] == "true"
    assert request.HasField("vad_silence_sec") and not request.HasField("vad_threshold")
    assert request.vad_mode == stt_pb2.VAD_MODE_CONTINUE
    assert [c.session_id for c in servicer.chunks] == ["abc", "", "", "", ""]
    assert {c.session_token for c in servicer.chunks} == {"tok-1"}
    assert {c.sample_rate_hz for c in servicer.chunks} == {16000}
    # paced like a live source: the last chunk cannot leave before 0.5 s
    assert 0.5 <= elapsed_sec < 1.5
    partial, final = results
    assert not partial.is_final and final.is_final and final.text == "front center"
    assert 0.0 <= partial.latency_sec < 0.5
    assert 0.0 <= final.latency_sec < 0.5


def test_sdk_without_realtime_sends_at_once(scripted_server):
    servicer, address = scripted_server
    with SttClient(address) as client:
        session = client.create_session()
        start_sec = time.monotonic()
        results = list(client.stream_audio(session, bytes(2 * 16000 * 5), 16000, realtime=False))
    assert time.monotonic() - start_sec < 2.0  # 5 s of audio
    assert len(servicer.chunks) == 50 and servicer.chunks[0].session_id == "generated-1"
    assert results[-1].is_final and results[-1].end_sec == pytest.approx(5.0)


def test_sdk_raises_stt_error_with_code(scripted_server):
    _, address = scripted_server
    with SttClient(address) as client:
        with pytest.raises(SttError) as caught:
            client.create_session(decode_profile="bogus")
        assert caught.value.code == "ERR1010"
        assert caught.value.status == grpc.StatusCode.INVALID_ARGUMENT
        assert str(caught.value).startswith("ERR1010: decode_profile 'bogus'")

        session = client.create_session("fail")
        with pytest.raises(SttError) as caught:
            list(client.stream_audio(session, bytes(3200), 16000, realtime=False))
        assert caught.value.code == "ERR1003"
        assert "chunk too long" in caught.value.message


def test_sdk_asks_for_a_session_again_only_while_no_server_has_answered(scripted_server):
    servicer, address = scripted_server
    with SttClient(address) as client:
        with pytest.raises(SttError) as refused:
            client.create_session("draining")
        assert refused.value.code == "ERR1015" and len(servicer.session_requests) == 1  # never twice

        started = time.monotonic()
        with pytest.raises(SttError) as refused:
            client.create_session("no-node")
        elapsed = time.monotonic() - started
    # Past gRPC's own 4 quick tries, the SDK went on trying for CONNECT_WAIT_SEC, then gave up soon.
    assert refused.value.status == grpc.StatusCode.UNAVAILABLE and "no healthy upstream" in refused.value.message
    assert len(servicer.session_requests) - 1 > 4, len(servicer.session_requests)
    assert sdk.CONNECT_WAIT_SEC <= elapsed < sdk.CONNECT_WAIT_SEC + 3, elapsed


def test_cli_json_and_metrics_lines_against_scripted_server(scripted_server, front_center_wav):
    _, address = scripted_server
    done = run_cli("clients.realtime.file", str(front_center_wav), "--server", address,
                   "--no-realtime", "--json", "--metrics", "--attr", "partial=true", timeout_sec=60)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    assert [line.get("is_final") for line in lines[:-1]] == [False, True]
    assert set(lines[1]) >= {"session_id", "utterance_index", "is_final", "text", "committed_text",
                             "unstable_text", "start_sec", "end_sec", "language", "latency_sec",
                             "decode_latency_sec"}
    summary = lines[-1]
    assert summary["summary"] is True and summary["finals"] == 1 and summary["partials"] == 1
    assert summary["audio_sec"] == pytest.approx(1.428, abs=0.01)


def test_batch_cli_sends_one_chunk_with_batch_attributes(scripted_server, front_center_wav):
    servicer, address = scripted_server
    done = run_cli("clients.batch.file", str(front_center_wav), "--server", address, timeout_sec=60)
    assert done.returncode == 0, done.stderr
    assert "[final #0 0.00-1.43s] front center" in done.stdout
    request = servicer.session_requests[0]
    assert request.attributes["upload_mode"] == "batch" and request.decode_profile == "accurate"
    assert len(servicer.chunks) == 1


def test_the_realtime_cli_resumes_by_default_and_no_resume_turns_it_off(scripted_server, front_center_wav):
    """A resuming client asks for checkpoints (resumable=true); --no-resume and the batch client do not."""
    servicer, address = scripted_server
    for args in ((), ("--no-resume",)):
        done = run_cli("clients.realtime.file", str(front_center_wav), "--server", address, "--no-realtime",
                       "--json", "--metrics", *args, timeout_sec=60)
        assert done.returncode == 0, done.stderr
        assert json_lines(done.stdout)[-1]["resumes"] == 0
    batch = run_cli("clients.batch.file", str(front_center_wav), "--server", address, timeout_sec=60)
    assert batch.returncode == 0, batch.stderr
    assert [r.attributes.get("resumable") for r in servicer.session_requests[-3:]] == ["true", None, None]


# --- the CLIs against the real appliance ------------------------------------------------

def _assert_front_center_final(lines: list[dict]) -> None:
    finals = [line for line in lines if line.get("is_final")]
    assert finals, f"no final result in {lines}"
    text = normalise(" ".join(line["text"] for line in finals))
    assert "front" in text and "center" in text, text


def test_appliance_server_realtime_cli_json(appliance_server, front_center_wav):
    done = run_cli("clients.realtime.file", str(front_center_wav), "--server", appliance_server.address,
                   "--json", "--no-realtime")
    assert done.returncode == 0, done.stderr
    _assert_front_center_final(json_lines(done.stdout))


def test_appliance_server_batch_cli_json(appliance_server, front_center_wav):
    done = run_cli("clients.batch.file", str(front_center_wav), "--server", appliance_server.address,
                   "--json")
    assert done.returncode == 0, done.stderr
    _assert_front_center_final(json_lines(done.stdout))


def test_appliance_server_config_file_supplies_audio_path(appliance_server, front_center_wav, tmp_path):
    config = tmp_path / "client.yaml"
    config.write_text(f"audio_path: {front_center_wav}\nserver: 127.0.0.1:1\nrealtime: false\n")
    # --server on the command line overrides the config's unreachable one
    done = run_cli("clients.realtime.file", "-c", str(config), "--server", appliance_server.address, "--json")
    assert done.returncode == 0, done.stderr
    _assert_front_center_final(json_lines(done.stdout))


def test_appliance_server_metrics_summary_line(appliance_server, front_center_wav):
    done = run_cli("clients.realtime.file", str(front_center_wav), "--server", appliance_server.address,
                   "--json", "--metrics")
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stdout)
    summary = lines[-1]
    assert summary["summary"] is True
    assert summary["finals"] >= 1 and summary["audio_sec"] == pytest.approx(1.428, abs=0.01)
    assert summary["final_latency_median_sec"] is not None
    assert summary["wall_sec"] >= 1.4  # realtime pacing
    _assert_front_center_final(lines[:-1])
