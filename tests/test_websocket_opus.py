"""Opus in Ogg and WebM on the live WebSocket door (what MediaRecorder and Opus encoders write),
demuxed here in pure Python (appliance/audio_stream) and decoded by libopus: the shipped JFK recording
encoded with PyAV at test time, streamed in small messages cut anywhere (mid-page, mid-element), and
its finals checked against the reference as the linear16 test does; damaged and hostile streams
(cut, garbage after a valid header, a huge declared element, a video track, another codec) refused
with ERR1003 on their own socket while an honest client beside them is served; the demuxers' bounds
one by one, without a server; and a real MediaRecorder stream from headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import shutil
import struct

import av
import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from appliance.audio_stream import ContainerOpus
from appliance.audio_stream.limits import MAX_HEADER_BYTES, MAX_PACKET_BYTES
from appliance.errors import ApplianceError
from clients.corpus import wer
from tests.conftest import serve_in_process
from tests.speech import COMMAND, COMMAND_TEXT, JFK, JFK_TEXT
from tests.test_websocket import DEADLINE_SEC, finals_text, free_port

RATE_HZ = 48_000


def encode(container: str, *, codec: str = "libopus", live: bool = False, video: bool = False,
           channels: int = 1) -> bytes:
    """The JFK recording encoded with PyAV (FFmpeg's muxers write it; the appliance never runs them)."""
    audio, source_hz = sf.read(str(JFK), dtype="float32")
    audio = soxr.resample(audio, source_hz, RATE_HZ).astype(np.float32)
    layout = "stereo" if channels == 2 else "mono"
    planes = np.repeat(audio[None, :], channels, axis=0)
    out_file = io.BytesIO()
    with av.open(out_file, "w", format=container, options={"live": "1"} if live else {}) as out:
        picture = out.add_stream("libvpx", rate=10) if video else None
        if picture is not None:
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(codec, rate=RATE_HZ, layout=layout)
        pts = 0
        for i in range(0, planes.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, i:i + 960]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts = RATE_HZ, pts
            pts += frame.samples
            out.mux(sound.encode(frame))
            if picture is not None and i % 4800 == 0:
                image = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                image.pts = i // 4800
                out.mux(picture.encode(image))
        out.mux(sound.encode(None))
        if picture is not None:
            out.mux(picture.encode(None))
    return out_file.getvalue()


def cuts(data: bytes, seed: int = 7, largest: int = 700) -> list[bytes]:
    """`data` in messages of 1..largest bytes: cut mid-page, mid-element, mid-header."""
    rng, at, pieces = random.Random(seed), 0, []
    while at < len(data):
        size = rng.randint(1, largest)
        pieces.append(data[at:at + size])
        at += size
    return pieces


@pytest.fixture(scope="module")
def live(request):
    return serve_in_process(request, env={
        "STT_WEBSOCKET_HOST": "127.0.0.1", "STT_WEBSOCKET_PORT": str(free_port()),
        "STT_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS": "16",  # every hostile stream at once, and the honest one
        "STT_WEBSOCKET_FIRST_MESSAGE_TIMEOUT_SEC": str(DEADLINE_SEC),
        "STT_WEBSOCKET_IDLE_TIMEOUT_SEC": str(DEADLINE_SEC)})


def url(server, query: str) -> str:
    return f"ws://127.0.0.1:{server.websocket_port}/v1/listen?{query}"


async def send_all(address: str, messages: list[bytes], *, audio_sec: float = 11.0, pace: float = 4.0,
                   close: bool = True) -> tuple[list[dict], int | None]:
    """Send the messages spread over audio_sec / pace, then CloseStream; (every message back, close code)."""
    got: list[dict] = []
    async with connect(address, open_timeout=10) as ws:
        async def read() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    got.append(json.loads(message))

        reader = asyncio.create_task(read())
        with contextlib.suppress(ConnectionClosed):
            for message in messages:
                await ws.send(message)
                await asyncio.sleep(audio_sec / pace / len(messages))
            if close:
                await ws.send(json.dumps({"type": "CloseStream"}))
        await asyncio.wait_for(reader, 60)
    return got, ws.close_code


@pytest.mark.parametrize("container, live_mode, query", [
    ("ogg", False, "model=nova-3&interim_results=true"),
    ("webm", True, "model=nova-3"),
    ("webm", False, "model=nova-3&encoding=opus"),
], ids=["ogg", "webm-live-unknown-sizes", "webm-encoding-opus"])
def test_opus_in_ogg_and_webm_streamed_in_arbitrary_cuts_gives_the_right_words(live, container, live_mode, query):
    data = encode(container, live=live_mode)
    messages, code = asyncio.run(send_all(url(live, query), cuts(data)))
    assert code == 1000, messages[-3:]
    assert wer(JFK_TEXT, finals_text(messages)) <= 0.25, finals_text(messages)
    metadata = messages[-1]
    assert metadata["type"] == "Metadata" and abs(metadata["duration"] - 11.0) < 0.1, metadata
    assert metadata["channels"] == 1
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert all(m["start"] + m["duration"] <= 11.05 for m in finals), finals


def ebml(element: int, payload: bytes, size: bytes | None = None) -> bytes:
    """One EBML element: its id bytes, an 8-byte size (or the one given), its payload."""
    ident = element.to_bytes((element.bit_length() + 7) // 8, "big")
    return ident + (size if size is not None else (0x01 << 56 | len(payload)).to_bytes(8, "big")) + payload


def webm_prefix(data: bytes) -> bytes:
    """The bytes of a WebM file up to its first Cluster (header, segment start, info, tracks)."""
    return data[:data.index(bytes.fromhex("1F43B675"))]


def ogg_headers(data: bytes) -> bytes:
    """The first two pages of an Ogg Opus file (OpusHead, OpusTags)."""
    second = data.index(b"OggS", 4)
    return data[:data.index(b"OggS", second + 4)]


def hostile_streams() -> dict[str, bytes]:
    webm, ogg = encode("webm"), encode("ogg")
    rng = random.Random(3)
    garbage = bytes(rng.randrange(256) for _ in range(4000))
    huge_block = ebml(0x1F43B675, b"", size=b"\x01\xff\xff\xff\xff\xff\xff\xff") + ebml(0xA3, b"", size=(
        0x01 << 56 | 1 << 40).to_bytes(8, "big"))
    serial = ogg.index(b"OggS", ogg.index(b"OggS", 4) + 4) + 14  # the third page's serial number
    return {
        "webm-cut-in-the-middle": webm[:len(webm) // 3] + webm[len(webm) // 3 + 501:],
        "ogg-cut-in-the-middle": ogg[:len(ogg) // 3] + ogg[len(ogg) // 3 + 501:],
        "webm-garbage-after-header": webm_prefix(webm) + garbage,
        "ogg-garbage-after-header": ogg_headers(ogg) + garbage,
        "webm-huge-element": webm_prefix(webm) + huge_block,
        "ogg-second-stream": ogg[:serial] + b"\x00\x00\x00\x01" + ogg[serial + 4:],
        "webm-video-track": encode("webm", video=True),
        "matroska-flac": encode("matroska", codec="flac"),
        "ogg-flac": encode("ogg", codec="flac"),
        "not-a-container": garbage,
    }


def test_damaged_and_hostile_streams_are_refused_on_their_own_socket_while_an_honest_client_is_served(live):
    hostile = hostile_streams()
    honest = encode("ogg")
    before = live.log()

    async def run() -> tuple[dict[str, tuple[list[dict], int | None]], list[dict]]:
        attacks = {name: send_all(url(live, "model=nova-3"), cuts(data, largest=2000), pace=8.0)
                   for name, data in hostile.items()}
        results = await asyncio.gather(*attacks.values(), send_all(url(live, "model=nova-3"), cuts(honest)))
        return dict(zip(attacks, results[:-1], strict=True)), results[-1][0]

    refused, served = asyncio.run(run())
    for name, (messages, code) in refused.items():
        errors = [(m["type"], m["code"]) for m in messages if m["type"] == "Error"]
        assert errors == [("Error", "ERR1003")] and code == 1008, (name, messages[-2:], code)
    assert wer(JFK_TEXT, finals_text(served)) <= 0.25, finals_text(served)
    assert live.runtime.sessions.active_sessions == 0
    assert "Traceback" not in live.log()[len(before):]


def test_a_stream_that_ends_mid_page_gives_the_finals_of_what_came(live):
    data = encode("ogg")
    messages, code = asyncio.run(send_all(url(live, "model=nova-3"), cuts(data[:len(data) - 777]), pace=8.0))
    assert code == 1000 and messages[-1]["type"] == "Metadata", messages[-2:]
    assert wer(JFK_TEXT, finals_text(messages)) <= 0.35, finals_text(messages)


def refusal_of(*messages: bytes) -> str:
    stream = ContainerOpus()
    with pytest.raises(ApplianceError) as refused:
        for message in messages:
            for _ in stream.pieces(message):
                pass
    assert refused.value.code == "ERR1003"
    return refused.value.message


def ogg_page(body_lacing: list[int], body: bytes, *, flags: int = 0, serial: int = 1, sequence: int = 2) -> bytes:
    return (b"OggS\x00" + bytes([flags]) + struct.pack("<qIII", 0, serial, sequence, 0) + bytes([len(body_lacing)])
            + bytes(body_lacing) + body)


def test_the_demuxers_bounds_each_refused_with_err1003():
    ogg, webm = encode("ogg"), encode("webm")
    headers = ogg_headers(ogg)
    serial = struct.unpack_from("<I", ogg, 14)[0]
    # An Opus packet longer than any encoder writes, continued over pages.
    long_packet = [ogg_page([255] * 40, bytes(255 * 40), serial=serial, flags=1 if i else 0) for i in range(2)]
    assert str(MAX_PACKET_BYTES) in refusal_of(headers, *long_packet)
    # Empty packets (a page of 255 zero lacing values is 282 bytes): more packets than audio can hold.
    empty = ogg_page([0] * 255, b"", serial=serial)
    assert "packets" in refusal_of(headers, *[empty] * 3)
    # Headers that never end: an OpusTags packet continued past the bound.
    head = ogg[:ogg.index(b"OggS", 4)]
    tags = [ogg_page([255] * 255, b"OpusTags" + bytes(255 * 255 - 8) if i == 0 else bytes(255 * 255),
                     serial=serial, flags=1 if i else 0) for i in range(2)]
    assert str(MAX_HEADER_BYTES) in refusal_of(head, *tags)
    # WebM: a non-master element of unknown size; a laced block; a block before the track list.
    prefix = webm_prefix(webm)
    assert "unknown size" in refusal_of(prefix + ebml(0xA3, b"", size=b"\xff"))
    track_one_laced = ebml(0x1F43B675, b"", size=b"\xff") + ebml(0xA3, b"\x81\x00\x00\x02" + bytes(10))
    assert "lace" in refusal_of(prefix + track_one_laced)
    segment = webm[:webm.index(bytes.fromhex("18538067")) + 12]
    assert "before its track list" in refusal_of(segment + ebml(0xA3, b"\x81\x00\x00\x80" + bytes(10)))
    # A void element of MAX_HEADER_BYTES before any audio: skipped unread, yet counted.
    assert str(MAX_HEADER_BYTES) in refusal_of(segment + ebml(0xEC, b"", size=(0x01 << 56 | MAX_HEADER_BYTES)
                                                             .to_bytes(8, "big")), bytes(MAX_HEADER_BYTES))


def test_stereo_opus_is_mixed_to_one_channel():
    stream = ContainerOpus()
    pcm = b"".join(piece for message in cuts(encode("webm", channels=2)) for piece in stream.pieces(message))
    assert stream.channels == 2 and abs(len(pcm) / 32_000 - 11.0) < 0.1
    assert np.abs(np.frombuffer(pcm, "<i2")).max() > 3000  # speech, not silence


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RECORDER_JS = """async ({url, seconds}) => {
    const mic = await navigator.mediaDevices.getUserMedia({audio: true});
    const ws = new WebSocket(url);
    const got = [];
    const closed = new Promise((resolve) => { ws.onclose = (e) => resolve(e.code); });
    ws.onmessage = (e) => got.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    const recorder = new MediaRecorder(mic, {mimeType: "audio/webm;codecs=opus"});
    recorder.ondataavailable = (e) => { if (e.data.size) ws.send(e.data); };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    recorder.start(250);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    recorder.stop();
    await stopped;
    ws.send(JSON.stringify({type: "CloseStream"}));
    return {code: await closed, messages: got, mime: recorder.mimeType};
}"""


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_real_mediarecorder_webm_stream_from_chromium_is_transcribed(live, tmp_path):
    """Chromium's own MediaRecorder (its fake microphone playing the command recording) streams WebM/Opus
    chunks, as a kiosk page would, to the door opened from http://localhost (a secure context)."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    audio, rate_hz = sf.read(str(COMMAND), dtype="int16")
    pad = lambda sec: np.zeros(int(sec * rate_hz), dtype=np.int16)  # noqa: E731
    microphone = tmp_path / "microphone.wav"
    sf.write(str(microphone), np.concatenate([pad(0.3), audio, pad(1.5)]), rate_hz, subtype="PCM_16")
    seconds = 0.3 + len(audio) / rate_hz + 1.5
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop"])
        try:
            page = browser.new_page()
            page.goto(f"http://localhost:{live.websocket_port}/")
            result = page.evaluate(RECORDER_JS, {"url": f"ws://localhost:{live.websocket_port}/v1/listen?model=nova-3",
                                                 "seconds": seconds})
        finally:
            browser.close()
    assert result["mime"].startswith("audio/webm") and result["code"] == 1000, result
    assert wer(COMMAND_TEXT, finals_text(result["messages"])) <= 0.25, result["messages"]
    assert result["messages"][-1]["type"] == "Metadata", result["messages"][-1]


def test_mutated_streams_are_decoded_or_refused_with_err1003_and_nothing_else():
    """Bytes flipped, cut out and spliced in at random (seeded) in valid Ogg and WebM streams: each is
    decoded or refused with ERR1003, never another exception (9000 such streams ran clean by hand)."""
    files = [encode("ogg")[:6000], encode("webm", live=True)[:6000]]
    rng = random.Random(11)
    outcomes = {"decoded": 0, "refused": 0}
    for n in range(300):
        data = bytearray(files[n % 2])
        for _ in range(rng.randint(1, 6)):
            at, roll = rng.randrange(len(data)), rng.random()
            if roll < 0.6:
                data[at] = rng.randrange(256)
            elif roll < 0.8:
                del data[at:at + rng.randint(1, 50)]
            else:
                data[at:at] = rng.randbytes(rng.randint(1, 50))
        stream = ContainerOpus()
        try:
            for message in cuts(bytes(data), seed=n, largest=3000):
                for _ in stream.pieces(message):
                    pass
            outcomes["decoded"] += 1
        except ApplianceError as err:
            assert err.code == "ERR1003", err
            outcomes["refused"] += 1
    assert outcomes["decoded"] and outcomes["refused"], outcomes
