"""The live WebSocket door (Deepgram's /v1/listen dialect) against in-process appliances: the official
deepgram-sdk's live client streaming real speech (interim and final results, the right words), Finalize,
the options and keys refused before the upgrade as coded HTTP errors, KeepAlive that extends no
deadline, wss:// with the operator's certificate, plain ws:// for loopback clients only, and the
captions page's files (nothing outside its directory)."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from appliance.transport.websocket.static import static_file
from clients.corpus import wer
from tests.conftest import serve_in_process
from tests.speech import COMMAND, COMMAND_TEXT, JFK, JFK_TEXT

DEADLINE_SEC = 3.0
QUERY = "model=nova-3&encoding=linear16&sample_rate=16000&channels=1"


def pcm16(path: Path, rate_hz: int = 16_000) -> bytes:
    audio, source_hz = sf.read(str(path), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    audio = soxr.resample(audio, source_hz, rate_hz)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def spoken_part(pcm: bytes, rate_hz: int = 16_000, threshold: float = 0.02) -> bytes:
    """The audio up to its last loud sample: a speaker still mid-utterance when Finalize comes."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return pcm[: 2 * (int(loud[-1]) + rate_hz // 20)]


@pytest.fixture(scope="module")
def live(request):
    """Every address bound (plain ws:// from loopback only, the default), short deadlines."""
    return serve_in_process(request, env={
        "STT_WEBSOCKET_HOST": "*", "STT_WEBSOCKET_PORT": str(free_port()),
        "STT_WEBSOCKET_FIRST_MESSAGE_TIMEOUT_SEC": str(DEADLINE_SEC),
        "STT_WEBSOCKET_IDLE_TIMEOUT_SEC": str(DEADLINE_SEC)})


def free_port() -> int:
    with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def url(server, query: str = QUERY, host: str = "127.0.0.1", scheme: str = "ws") -> str:
    return f"{scheme}://{host}:{server.websocket_port}/v1/listen?{query}"


async def stream(address: str, pcm: bytes, *, step: int = 3200, bytes_per_sec: int = 32_000, pace: float = 2.0,
                 finalize: bool = False, close: bool = True, **connect_args) -> list[dict]:
    """Send `pcm` in messages of `step` bytes at `pace` x real time (then Finalize, CloseStream), and
    every message until the close."""
    messages: list[dict] = []
    async with connect(address, open_timeout=10, **connect_args) as ws:
        async def read() -> None:
            async for message in ws:
                messages.append(json.loads(message))

        reader = asyncio.create_task(read())
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i:i + step])
            await asyncio.sleep(step / bytes_per_sec / pace)
        if finalize:
            await ws.send(json.dumps({"type": "Finalize"}))
        if close:
            await ws.send(json.dumps({"type": "CloseStream"}))
        await asyncio.wait_for(reader, 60)
    return messages


def refusal(address: str, **connect_args) -> tuple[int, dict]:
    """The HTTP status and {code, message} body of an upgrade the server refuses."""
    async def attempt() -> tuple[int, dict]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(address, open_timeout=10, **connect_args):
                pass
        response = refused.value.response
        return response.status_code, json.loads(response.body)
    return asyncio.run(attempt())


def finals_text(messages: list[dict]) -> str:
    return " ".join(m["channel"]["alternatives"][0]["transcript"] for m in messages
                    if m["type"] == "Results" and m["is_final"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK imports websockets' old InvalidStatusCode
def test_deepgram_sdk_streams_real_speech_with_interim_and_final_results(live):
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    base = f"127.0.0.1:{live.websocket_port}"
    environment = DeepgramClientEnvironment(base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}",
                                            agent_rest=f"http://{base}")
    client = AsyncDeepgramClient(api_key="any-key", environment=environment)
    pcm = pcm16(JFK)
    got = []

    async def run() -> None:
        async with client.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate="16000", channels="1",
                                            interim_results="true", vad_events="true", utterance_end_ms="1000",
                                            punctuate="true", smart_format="true", language="en-US") as socket_:
            async def read() -> None:
                async for message in socket_:
                    got.append(message.model_dump() if hasattr(message, "model_dump") else message)

            reader = asyncio.create_task(read())
            for i in range(0, len(pcm), 3200):
                await socket_.send_media(pcm[i:i + 3200])
                await asyncio.sleep(0.05)
            await socket_.send_close_stream()
            await asyncio.wait_for(reader, 60)

    asyncio.run(run())
    kinds = [m["type"] for m in got]
    results = [m for m in got if m["type"] == "Results"]
    interim = [m for m in results if not m["is_final"]]
    finals = [m for m in results if m["is_final"]]
    assert interim and finals and "SpeechStarted" in kinds and "UtteranceEnd" in kinds, kinds
    assert kinds[-1] == "Metadata" and abs(got[-1]["duration"] - len(pcm) / 32_000) < 0.05, got[-1]
    assert any(m["speech_final"] for m in finals)
    assert wer(JFK_TEXT, finals_text(got)) <= 0.25, finals_text(got)
    for message in finals:
        alternative = message["channel"]["alternatives"][0]
        assert alternative["words"] and 0 < alternative["confidence"] <= 1, alternative
        starts = [w["start"] for w in alternative["words"]]
        assert starts == sorted(starts) and message["start"] <= starts[0] <= message["start"] + message["duration"]
        assert message["metadata"]["request_id"] == got[-1]["request_id"]


def test_finalize_flushes_the_open_utterance_and_times_leave_the_added_silence_out(live):
    pcm = spoken_part(pcm16(COMMAND))
    started = time.monotonic()
    messages = asyncio.run(stream(url(live, QUERY + "&interim_results=false"), pcm, pace=4.0, finalize=True))
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert finals and finals[-1].get("from_finalize") is True and not finals[-1]["speech_final"], messages
    assert wer(COMMAND_TEXT, finals_text(messages)) <= 0.25, finals_text(messages)
    audio_sec = len(pcm) / 32_000
    assert finals[-1]["start"] + finals[-1]["duration"] <= audio_sec + 0.05, (finals[-1], audio_sec)
    assert messages[-1]["type"] == "Metadata" and abs(messages[-1]["duration"] - audio_sec) < 0.01
    assert time.monotonic() - started < 20


def test_finalize_with_nothing_open_is_answered_by_an_empty_final_from_finalize(live):
    """Agent frameworks end the user's turn on the from_finalize final (Pipecat waits out a timeout
    without it), so a Finalize that finds no open utterance is answered too, as Deepgram does."""
    silence = bytes(16_000)  # 0.5 s: no speech, no utterance
    messages = asyncio.run(stream(url(live, QUERY + "&interim_results=false"), silence, pace=4.0, finalize=True))
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert len(finals) == 1 and finals[0].get("from_finalize") is True, messages
    assert finals[0]["channel"]["alternatives"][0]["transcript"] == "" and not finals[0]["speech_final"]
    assert finals[0]["duration"] == 0 and finals[0]["start"] <= 0.5 + 0.01
    assert messages[-1]["type"] == "Metadata"


@pytest.mark.parametrize("query, status, code, named", [
    (QUERY + "&diarise=true", 400, "ERR1010", "diarise"),
    (QUERY + "&diarize=true", 400, "ERR1010", "diarize"),
    ("model=nova-3&sample_rate=16000", 400, "ERR1010", "encoding"),
    ("model=nova-3&encoding=opus&sample_rate=16000", 400, "ERR1010", "encoding"),
    ("model=nova-3&encoding=linear16", 400, "ERR1010", "sample_rate"),
    ("model=nova-3&encoding=linear16&sample_rate=5", 400, "ERR1010", "sample_rate"),
    (QUERY + "&channels=99", 400, "ERR1010", "channels"),
    (QUERY + "&endpointing=soon", 400, "ERR1010", "endpointing"),
    (QUERY + "&utterance_end_ms=10", 400, "ERR1010", "utterance_end_ms"),
    (QUERY + "&interim_results=maybe", 400, "ERR1010", "interim_results"),
    (QUERY + "&language=xx", 400, "ERR1010", "language"),
    (QUERY + "&sample_rate=8000", 400, "ERR1010", "sample_rate"),
    ("model=gpt-9&encoding=linear16&sample_rate=16000", 404, "ERR1011", "model"),
    (QUERY + "&keyterm=" + "x" * 120, 400, "ERR1010", "keyterm"),
])
def test_options_are_refused_before_the_upgrade_with_a_coded_http_error(live, query, status, code, named):
    got_status, body = refusal(url(live, query))
    assert (got_status, body["code"]) == (status, code), body
    assert named in body["message"], body


def test_deepgram_and_whisper_model_names_and_formatting_options_are_accepted(live):
    pcm = pcm16(COMMAND)
    query = ("model=whisper-1&encoding=linear16&sample_rate=48000&channels=2&punctuate=false&smart_format=true"
             "&profanity_filter=true&endpointing=300&keywords=meters:2&keyterm=forward&diarize=false&tag=kiosk")
    stereo = np.repeat(np.frombuffer(pcm16(COMMAND, 48_000), dtype="<i2"), 2).tobytes()
    # Messages cut mid-frame (4801 bytes of 4-byte frames): the remainder waits for the next message.
    messages = asyncio.run(stream(url(live, query), stereo, step=4801, bytes_per_sec=192_000, pace=4.0))
    assert wer(COMMAND_TEXT, finals_text(messages)) <= 0.25, messages
    transcript = finals_text(messages)
    assert transcript == transcript.lower() and "." not in transcript  # punctuate=false
    assert messages[-1]["type"] == "Metadata" and messages[-1]["channels"] == 2
    assert abs(messages[-1]["duration"] - len(pcm) / 32_000) < 0.05


def test_keepalive_keeps_no_connection_past_the_servers_deadline(live):
    async def keep_alive_only() -> tuple[list[dict], int | None, float]:
        messages: list[dict] = []
        started = time.monotonic()
        async with connect(url(live)) as ws:
            try:
                while True:
                    await ws.send(json.dumps({"type": "KeepAlive"}))
                    try:
                        messages.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                    except TimeoutError:
                        pass
            except ConnectionClosed:
                pass
            return messages, ws.close_code, time.monotonic() - started

    messages, close_code, open_sec = asyncio.run(keep_alive_only())
    assert [m["code"] for m in messages] == ["ERR1012"] and messages[0]["type"] == "Error", messages
    assert close_code == 1008 and DEADLINE_SEC - 0.5 < open_sec < DEADLINE_SEC + 3, (close_code, open_sec)


def test_plain_ws_is_for_loopback_clients_only_by_default(live):
    address = lan_address_or_skip()
    status, body = refusal(url(live, host=address))
    assert (status, body["code"]) == (403, "ERR1005") and "tls.cert_file" in body["message"], body


def lan_address_or_skip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: the route picks this host's address
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this host has no non-loopback IPv4 address to connect from")
    return address


@pytest.fixture(scope="module")
def keyed(request):
    """An appliance that takes one api key."""
    return serve_in_process(request, env={"STT_AUTH_CREATE_SESSION_AUTH_PROFILE": "api_key",
                                          "STT_AUTH_ALLOWED_API_KEYS": "kiosk-key"})


def test_api_keys_as_deepgram_clients_send_them(keyed):
    pcm = pcm16(COMMAND)[: 32_000]
    for headers, subprotocols in (({"Authorization": "Token kiosk-key"}, None),
                                  ({"Authorization": "Bearer kiosk-key"}, None), ({}, ["token", "kiosk-key"])):
        messages = asyncio.run(stream(url(keyed), pcm, pace=8.0, additional_headers=headers,
                                      subprotocols=subprotocols))
        assert messages[-1]["type"] == "Metadata", (headers, messages)
    for headers, subprotocols in (({"Authorization": "Token wrong-key"}, None), ({}, None),
                                  ({}, ["token", "wrong-key"]), ({"Authorization": "Basic a2lvc2s="}, None)):
        status, body = refusal(url(keyed), additional_headers=headers, subprotocols=subprotocols)
        assert (status, body["code"]) == (401, "ERR1004"), (headers, subprotocols, body)


def test_the_browsers_token_subprotocol_is_answered_with_token_never_the_key(keyed):
    async def opened() -> str | None:
        async with connect(url(keyed), subprotocols=["token", "kiosk-key"]) as ws:
            return ws.subprotocol
    assert asyncio.run(opened()) == "token"


@pytest.fixture(scope="module")
def tls_live(request, tmp_path_factory):
    from tests.test_tls import make_self_signed

    certs = make_self_signed(tmp_path_factory.mktemp("ws-tls"), "server")
    server = serve_in_process(request, "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key))
    return server, certs


def test_wss_with_the_operators_certificate(tls_live):
    server, certs = tls_live
    context = ssl.create_default_context(cafile=str(certs.cert))
    messages = asyncio.run(stream(url(server, scheme="wss"), pcm16(COMMAND), pace=4.0, ssl=context))
    assert wer(COMMAND_TEXT, finals_text(messages)) <= 0.25, messages
    with pytest.raises(InvalidMessage):  # plain ws:// to the TLS port: no HTTP answer, the TLS layer drops it
        asyncio.run(stream(url(server), pcm16(COMMAND)[:3200], pace=8.0))


def test_captions_page_serves_only_its_own_files(tmp_path, live):
    (tmp_path / "index.html").write_text("<!doctype html><title>captions</title>")
    (tmp_path / "captions.js").write_text("console.log('hi')")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "secret.txt").write_text("no")
    (tmp_path.parent / "outside.js").write_text("no")
    page = static_file("/", tmp_path)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html") and b"captions" in page.body
    script = static_file("/captions.js?v=1", tmp_path)
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    for path in ("/sub/secret.txt", "/../outside.js", "/%2e%2e/outside.js", "/.hidden", "/missing.js", "//etc/passwd"):
        refused = static_file(path, tmp_path)
        assert refused.status_code == 404 and json.loads(refused.body)["code"] == "ERR1018", path
    for path in ("/../../../etc/passwd", "/v1/nothing"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{live.websocket_port}{path}", timeout=10)
        assert err.value.code == 404 and json.loads(err.value.read())["code"] == "ERR1018"


def test_utterance_end_comes_after_each_gap_of_utterance_end_ms_between_words_and_only_then(live):
    """Three commands with pauses of 0.6 s and 1.8 s and 1.6 s of silence after: UtteranceEnd after the
    second and the third (gaps of at least utterance_end_ms after the last finalized word), not after the
    first, though the VAD closed each utterance (endpointing=300)."""
    spoken = spoken_part(pcm16(COMMAND))
    spoken = spoken[2 * int(np.flatnonzero(np.abs(np.frombuffer(spoken, "<i2")) > 600)[0]):]  # from the onset
    silence = lambda sec: bytes(2 * int(16_000 * sec))  # noqa: E731
    pcm = silence(0.3) + spoken + silence(0.6) + spoken + silence(1.8) + spoken + silence(1.6)
    query = QUERY + "&utterance_end_ms=1000&endpointing=300&interim_results=true&vad_events=true"
    messages = asyncio.run(stream(url(live, query), pcm, pace=2.0))
    assert wer(" ".join([COMMAND_TEXT] * 3), finals_text(messages)) <= 0.25, finals_text(messages)
    timeline = []  # ("word", start, end) of finalized words and ("end", last_word_end) in the order sent
    for m in messages:
        if m["type"] == "Results" and m["is_final"]:
            timeline += [("word", w["start"], w["end"]) for w in m["channel"]["alternatives"][0]["words"]]
        elif m["type"] == "UtteranceEnd":
            timeline.append(("end", m["last_word_end"], m["last_word_end"]))
    ends = [i for i, item in enumerate(timeline) if item[0] == "end"]
    assert len(ends) == 2, timeline
    for i in ends:  # each follows a finalized word, names its end, and the next word is at least 1 s later
        assert timeline[i - 1][0] == "word" and abs(timeline[i - 1][2] - timeline[i][1]) < 0.002, timeline
        later = [item for item in timeline[i + 1:] if item[0] == "word"]
        assert not later or later[0][1] - timeline[i][1] >= 1.0, timeline
    words = [item for item in timeline if item[0] == "word"]
    pauses = [words[i + 1][1] - words[i][2] for i in range(len(words) - 1)]
    assert len([p for p in pauses if p >= 1.0]) == 1 and any(0.3 < p < 1.0 for p in pauses), words
