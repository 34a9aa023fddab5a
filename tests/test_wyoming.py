"""The Wyoming front door, driven by the wyoming package's own client (as Home Assistant's
integration is) against a real appliance process: describe, streamed transcription of real speech
in any sample format, concurrent clients, and the refusals (caps, allow-list, malformed and
oversized events, idle connections), each followed by a client that is still served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info

from clients.corpus import wer
from clients.local_server import LocalAppliance
from tests.adversarial.victim import ipv6_loopback_or_skip
from tests.helpers import REPO_ROOT
from tests.inprocess import InProcessAppliance

SPEECH = REPO_ROOT / "hwtests/speech"
JFK = SPEECH / "sent_en_jfk_ask_not.wav"
JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
COMMAND = SPEECH / "cmd_en_go_forward_ten_meters.wav"
EVENT_TIMEOUT_SEC = 60  # the last utterance's decode on a busy 2-core box
IDLE_TIMEOUT_SEC = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def wyoming_server(request) -> tuple[InProcessAppliance, int]:
    """Bound to every address ("*"), open to 127.0.0.1 only, two sessions per client IP."""
    port = free_port()
    server = InProcessAppliance("--wyoming-port", str(port), env={
        "STT_WYOMING_HOST": "*", "STT_WYOMING_ALLOW_NETWORKS": "127.0.0.1/32",
        "STT_WYOMING_IDLE_TIMEOUT_SEC": str(IDLE_TIMEOUT_SEC), "STT_WYOMING_MAX_EVENT_BYTES": "262144",
        "STT_SERVER_MAX_SESSIONS_PER_IP": "2"})
    request.addfinalizer(server.stop)
    return server.start(), port


def read_frames(path: Path) -> tuple[np.ndarray, int]:
    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate_hz


def encode(audio: np.ndarray, width: int, channels: int) -> bytes:
    """float mono → little-endian PCM of `width` bytes, `channels` interleaved copies."""
    if width == 1:  # unsigned 8-bit, as WAV stores it
        samples = np.clip(audio * 127 + 128, 0, 255).astype(np.uint8)
    else:
        scale = 2 ** (8 * width - 1) - 1
        ints = np.clip(audio * scale, -scale, scale).astype(np.int64)
        samples = ints.astype("<i4") if width == 4 else ints.astype("<i2") if width == 2 else ints
        if width == 3:
            samples = np.frombuffer(ints.astype("<i4").tobytes(), dtype=np.uint8).reshape(-1, 4)[:, :3]
            return np.repeat(samples, channels, axis=0).reshape(-1).tobytes() if channels > 1 else samples.tobytes()
    return np.repeat(samples, channels).tobytes()


async def transcribe(port: int, audio: np.ndarray, rate_hz: int, *, width: int = 2, channels: int = 1,
                     chunk_sec: float = 0.1, host: str = "127.0.0.1",
                     language: str | None = None) -> tuple[list[Event], float]:
    """One transcription as Home Assistant sends it; (every event received, seconds from audio-stop
    to the transcript)."""
    client = AsyncTcpClient(host, port)
    await client.connect()
    try:
        step = int(chunk_sec * rate_hz)
        try:
            await client.write_event(Transcribe(language=language).event())
            await client.write_event(AudioStart(rate=rate_hz, width=width, channels=channels).event())
            for start in range(0, len(audio), step):
                chunk = encode(audio[start:start + step], width, channels)
                await client.write_event(AudioChunk(rate=rate_hz, width=width, channels=channels, audio=chunk).event())
            await client.write_event(AudioStop().event())
        except ConnectionError:
            pass  # refused mid-send: the server said why before it closed, read on
        stopped = time.monotonic()
        events, waited = [], None
        while True:
            try:
                event = await asyncio.wait_for(client.read_event(), EVENT_TIMEOUT_SEC)
            except ConnectionError:
                break
            if event is None:
                break
            events.append(event)
            if Transcript.is_type(event.type):
                waited = time.monotonic() - stopped
            if TranscriptStop.is_type(event.type) or Error.is_type(event.type):
                break
        return events, waited if waited is not None else float("nan")
    finally:
        with contextlib.suppress(ConnectionError):  # a refused client's socket is already reset
            await client.disconnect()


def transcript_text(events: list[Event]) -> str:
    transcripts = [Transcript.from_event(e).text for e in events if Transcript.is_type(e.type)]
    assert len(transcripts) == 1, [e.type for e in events]
    return transcripts[0]


def error_of(events: list[Event]) -> Error:
    errors = [Error.from_event(e) for e in events if Error.is_type(e.type)]
    assert errors, f"expected an error event, got {[e.type for e in events]}"
    return errors[0]


async def raw_exchange(port: int, data: bytes, *, host: str = "127.0.0.1") -> list[dict]:
    """Send raw bytes; the events the server answers with before it closes (headers only)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        answers = []
        while line := await asyncio.wait_for(reader.readline(), EVENT_TIMEOUT_SEC):
            header = json.loads(line)
            if header.get("data_length"):
                header.setdefault("data", {}).update(json.loads(await reader.readexactly(header["data_length"])))
            answers.append(header)
        return answers
    finally:
        writer.close()


def still_served(port: int) -> None:
    """A well-behaved client right after the refusal: a short command, transcribed."""
    audio, rate_hz = read_frames(COMMAND)
    events, _ = asyncio.run(transcribe(port, audio, rate_hz))
    assert not any(Error.is_type(e.type) for e in events), [e.data for e in events if Error.is_type(e.type)]
    assert wer("go forward ten meters", transcript_text(events)) <= 0.25


def test_describe_lists_the_loaded_model_and_its_languages(wyoming_server):
    _, port = wyoming_server

    async def describe() -> Info:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), EVENT_TIMEOUT_SEC)
            assert event is not None and Info.is_type(event.type)
            return Info.from_event(event)

    info = asyncio.run(describe())
    (program,) = info.asr
    assert program.name == "stt-appliance" and program.installed and program.supports_transcript_streaming
    (model,) = program.models
    assert model.name.endswith("tiny.en") and model.languages == ["en"]  # the id the profile gave it


def test_streamed_speech_is_transcribed_with_streaming_events_in_order(wyoming_server):
    server, port = wyoming_server
    audio, rate_hz = read_frames(JFK)
    events, waited = asyncio.run(transcribe(port, audio, rate_hz, language="en"))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"], types
    chunks = [TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type)]
    assert chunks, "each final arrives as a transcript-chunk before the transcript"
    text = transcript_text(events)
    assert " ".join(chunks) == text
    assert wer(JFK_TEXT, text) <= 0.15, text
    assert TranscriptStart.from_event(events[0]).language == "en"
    # Decoded while the audio arrived: after audio-stop only the last utterance is left to finish.
    assert waited < 10, waited
    # Counted as a Wyoming session, beside gRPC's, on /metrics.
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    counted = re.search(r'^stt_sessions_by_protocol_total\{protocol="wyoming"\} (\S+)$', exposition, re.M)
    assert counted and float(counted.group(1)) >= 1, exposition[:2000]


@pytest.mark.parametrize("rate_hz, width, channels", [(48_000, 4, 2), (8_000, 1, 1), (22_050, 3, 2)])
def test_any_rate_width_and_channel_count_is_converted(wyoming_server, rate_hz, width, channels):
    _, port = wyoming_server
    audio, native_hz = read_frames(COMMAND)
    resampled = soxr.resample(audio, native_hz, rate_hz).astype(np.float32)
    events, _ = asyncio.run(transcribe(port, resampled, rate_hz, width=width, channels=channels))
    assert wer("go forward ten meters", transcript_text(events)) <= 0.25


def test_two_concurrent_clients_each_get_their_own_transcript(wyoming_server):
    _, port = wyoming_server
    jfk, jfk_hz = read_frames(JFK)
    command, command_hz = read_frames(COMMAND)

    async def both():
        return await asyncio.gather(transcribe(port, jfk, jfk_hz), transcribe(port, command, command_hz))

    (jfk_events, _), (command_events, _) = asyncio.run(both())
    assert wer(JFK_TEXT, transcript_text(jfk_events)) <= 0.15
    assert wer("go forward ten meters", transcript_text(command_events)) <= 0.25


def test_a_client_over_its_session_cap_is_refused_and_the_others_finish(wyoming_server):
    _, port = wyoming_server
    audio, rate_hz = read_frames(COMMAND)

    async def three_at_once():
        holders = [AsyncTcpClient("127.0.0.1", port) for _ in range(2)]
        for holder in holders:  # two transcriptions open: this IP's share (max_sessions_per_ip=2)
            await holder.connect()
            await holder.write_event(AudioStart(rate=rate_hz, width=2, channels=1).event())
            assert TranscriptStart.is_type((await asyncio.wait_for(holder.read_event(), EVENT_TIMEOUT_SEC)).type)
        refused, _ = await transcribe(port, audio, rate_hz)
        for holder in holders:
            await holder.write_event(AudioStop().event())
            while not TranscriptStop.is_type((await asyncio.wait_for(holder.read_event(), EVENT_TIMEOUT_SEC)).type):
                pass
            await holder.disconnect()
        return refused

    error = error_of(asyncio.run(three_at_once()))
    assert error.code == "ERR1007" and "max_sessions_per_ip" in error.text
    still_served(port)


def test_a_client_outside_the_allowed_networks_is_refused(wyoming_server):
    ipv6_loopback_or_skip()
    _, port = wyoming_server
    answers = asyncio.run(raw_exchange(port, b'{"type": "describe"}\n', host="::1"))
    assert [(a["type"], a["data"]["code"]) for a in answers] == [("error", "ERR1005")]
    still_served(port)


@pytest.mark.parametrize("data, code", [
    (b'{"type": "audio-chunk", "payload_length": 104857600}\n', "ERR1010"),  # 100 MB announced
    (b'{"type": "audio-start", "data_length": 300000}\n', "ERR1010"),
    (b"this is not json\n", "ERR1010"),
    (b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, "payload_length": 4}\n\0\0\0\0',
     "ERR1010"),  # audio before audio-start
    (b'{"type": "audio-start", "data": {"rate": 16000, "width": 5, "channels": 1}}\n'
     b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 5, "channels": 1}, "payload_length": 5}\n\0\0\0\0\0',
     "ERR1003"),
    (b'{"type": "audio-start", "data": {"rate": 1, "width": 2, "channels": 1}}\n'
     b'{"type": "audio-chunk", "data": {"rate": 1, "width": 2, "channels": 1}, "payload_length": 2}\n\0\0',
     "ERR1003"),
    (b'{"type": "audio-start", "data": {"rate": 16000, "width": 2, "channels": 1}}\n'
     b'{"type": "audio-chunk", "data": {"width": 2}, "payload_length": 2}\n\0\0', "ERR1010"),  # no rate
    (b'{"type": "transcribe", "data": {"language": 5}}\n{"type": "audio-start", "data": {"rate": 16000}}\n',
     "ERR1010"),
    (b'{"type": "transcribe", "data": {"language": "xx"}}\n'
     b'{"type": "audio-start", "data": {"rate": 16000, "width": 2, "channels": 1}}\n', "ERR1010"),
])
def test_malformed_and_oversized_events_get_a_code_and_a_close(wyoming_server, data, code):
    _, port = wyoming_server
    answers = asyncio.run(raw_exchange(port, data))
    assert answers[-1]["type"] == "error" and answers[-1]["data"]["code"] == code, answers
    still_served(port)


def test_an_idle_connection_is_closed_with_a_code(wyoming_server):
    _, port = wyoming_server
    started = time.monotonic()
    answers = asyncio.run(raw_exchange(port, b""))
    assert [(a["type"], a["data"]["code"]) for a in answers] == [("error", "ERR1012")]
    assert IDLE_TIMEOUT_SEC <= time.monotonic() - started < IDLE_TIMEOUT_SEC + 10


def test_the_wyoming_load_benchmark_runs_and_reports_each_step(wyoming_server, tmp_path):
    _, port = wyoming_server
    out = tmp_path / "steps.json"
    done = subprocess.run([sys.executable, "bench/wyoming_load.py", "--port", str(port), "--counts", "1",
                           "--duration", "2", "--json", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    (step,) = json.loads(out.read_text())
    assert step["clients"] == 1 and step["requests"] >= 1 and step["errors"] == 0
    assert 0 < step["wait_p50_sec"] <= step["wait_p95_sec"]
    assert step["cpu_mean_pct"] is None  # --port: not this script's server, so no /proc figures


def test_zeroconf_announces_the_port_for_home_assistant_and_withdraws_it_on_stop():
    """What Home Assistant's zeroconf discovery sees, on loopback: a browser started before the
    appliance sees it added (and resolves it to the Wyoming port), then removed by its goodbye."""
    pytest.importorskip("zeroconf", reason="the discovery extra (zeroconf) is not installed")
    from zeroconf import ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

    port, name = free_port(), f"stt-test-{uuid.uuid4().hex[:8]}"
    service = f"{name}._wyoming._tcp.local."
    server = LocalAppliance("--wyoming-port", str(port), env={
        "STT_WYOMING_HOST": "127.0.0.1", "STT_WYOMING_ZEROCONF": "true", "STT_WYOMING_ZEROCONF_NAME": name,
        "STT_WYOMING_ZEROCONF_ADDRESS": "127.0.0.1"})

    async def watch():
        seen: list[ServiceStateChange] = []

        def on_change(zeroconf, service_type, name, state_change):
            if name == service:
                seen.append(state_change)

        async def wait_for(change: ServiceStateChange, timeout_sec: float = 30.0) -> None:
            deadline = time.monotonic() + timeout_sec
            while change not in seen:
                assert time.monotonic() < deadline, f"no {change} for {service} in {timeout_sec:g} s: {seen}"
                await asyncio.sleep(0.1)

        zeroconf = AsyncZeroconf(interfaces=["127.0.0.1"])
        browser = AsyncServiceBrowser(zeroconf.zeroconf, "_wyoming._tcp.local.", handlers=[on_change])
        try:
            await asyncio.to_thread(server.start)
            await wait_for(ServiceStateChange.Added)
            info = await zeroconf.async_get_service_info("_wyoming._tcp.local.", service, timeout=5000)
            assert info is not None and (info.port, info.parsed_addresses()) == (port, ["127.0.0.1"])
            assert await asyncio.to_thread(server.stop) == 0
            await wait_for(ServiceStateChange.Removed)
        finally:
            await browser.async_cancel()
            await zeroconf.async_close()
            server.__exit__(None, None, None)

    asyncio.run(watch())


def test_sigterm_mid_transcription_delivers_what_was_heard_then_err1015_and_exits_cleanly(request):
    port = free_port()
    server = LocalAppliance("--wyoming-port", str(port), env={"STT_WYOMING_HOST": "127.0.0.1"})
    server.start()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    audio, rate_hz = read_frames(JFK)
    pcm16 = encode(audio, 2, 1)

    async def speak_until_drained() -> list[Event]:
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        events: list[Event] = []

        async def read() -> None:
            with contextlib.suppress(ConnectionError):
                while (event := await client.read_event()) is not None:
                    events.append(event)

        reader = asyncio.create_task(read())
        await client.write_event(AudioStart(rate=rate_hz, width=2, channels=1).event())
        step = rate_hz // 10 * 2
        with contextlib.suppress(ConnectionError):
            for n, offset in enumerate(range(0, len(pcm16), step)):
                if n == 60:  # 6 s in, mid-sentence: the operator stops the service
                    server.process.send_signal(signal.SIGTERM)
                await client.write_event(AudioChunk(rate=rate_hz, width=2, channels=1,
                                                    audio=pcm16[offset:offset + step]).event())
                await asyncio.sleep(0.1)
        await asyncio.wait_for(reader, EVENT_TIMEOUT_SEC)
        return events

    events = asyncio.run(speak_until_drained())
    heard = " ".join(TranscriptChunk.from_event(e).text for e in events if TranscriptChunk.is_type(e.type))
    assert "my fellow americans" in heard.lower(), [e.type for e in events]  # the finals before the drain
    assert error_of(events).code == "ERR1015"
    assert server.process.wait(timeout=60) == 0
