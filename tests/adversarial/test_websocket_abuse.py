"""The WebSocket door against one hostile host (127.0.0.1) while an honest kiosk (::1) is served:
handshakes that never finish hold at most the host's share and close at the handshake deadline,
sockets that send nothing (or stop sending audio) close at their deadline with ERR1012, one address
cannot take every slot, and malformed control messages and oversized frames end only their own
connection (an Error frame with ERR1010, or close 1009), with no traceback and a bounded log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.corpus import wer
from tests.adversarial.victim import ipv6_loopback_or_skip
from tests.conftest import serve_in_process
from tests.test_websocket import COMMAND, COMMAND_TEXT, QUERY, finals_text, free_port, pcm16, refusal, stream

DEADLINE_SEC = 2.0
MAX_CONNECTIONS = 8
PER_ADDRESS = 4
MAX_MESSAGE_BYTES = 65536
SILENCE = bytes(3200)  # 100 ms at 16 kHz
WAVES = 15


@pytest.fixture(scope="module")
def door(request):
    """(appliance, port): every address bound, small caps, short deadlines."""
    port = free_port()
    server = serve_in_process(request, env={
        "STT_WEBSOCKET_HOST": "*", "STT_WEBSOCKET_PORT": str(port),
        "STT_WEBSOCKET_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "STT_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
        "STT_WEBSOCKET_HANDSHAKE_TIMEOUT_SEC": str(DEADLINE_SEC),
        "STT_WEBSOCKET_FIRST_MESSAGE_TIMEOUT_SEC": str(DEADLINE_SEC),
        "STT_WEBSOCKET_IDLE_TIMEOUT_SEC": str(DEADLINE_SEC),
        "STT_WEBSOCKET_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)})
    return server, port


def address(port: int, host: str = "127.0.0.1", query: str = QUERY) -> str:
    return f"ws://{host}:{port}/v1/listen?{query}"


async def honest(port: int) -> str:
    """The kiosk on the other address (::1): a command at 4x real time; its finals' text."""
    return finals_text(await stream(address(port, "[::1]"), pcm16(COMMAND), pace=4.0))


def assert_served(text: str) -> None:
    assert wer(COMMAND_TEXT, text) <= 0.25, text


async def wait_for_free_share(port: int, timeout_sec: float = 10.0) -> None:
    """Until this host's closed connections have given their slots back (an upgrade is accepted)."""
    deadline = time.monotonic() + timeout_sec
    while True:
        try:
            async with connect(address(port), open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "CloseStream"}))
                async for _ in ws:
                    pass
            return
        except Exception:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def trickled(port: int, opening: bytes, piece: Callable[[int], bytes]) -> float:
    """`opening`, then `piece(i)` every 0.3 s, never finishing; seconds until the server closes."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(opening)

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for i in range(1000):
                    writer.write(piece(i))
                    await writer.drain()
                    await asyncio.sleep(0.3)

        talker = asyncio.create_task(trickle())
        try:
            while await asyncio.wait_for(reader.read(4096), 30):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
        finally:
            talker.cancel()
        return time.monotonic() - started
    finally:
        writer.close()


async def slow_handshake(port: int) -> float:
    """A request header that never ends (one header line every 0.3 s); seconds until the server closes."""
    return await trickled(port, b"GET /v1/listen?" + QUERY.encode() + b" HTTP/1.1\r\nHost: x\r\n",
                          lambda i: b"X-Slow-%d: y\r\n" % i)


def test_handshakes_that_never_finish_hold_one_hosts_share_and_close_at_the_deadline(door):
    ipv6_loopback_or_skip()
    _server, port = door

    async def attack() -> tuple[list[float], str]:
        slow = [asyncio.create_task(slow_handshake(port)) for _ in range(3 * PER_ADDRESS)]
        await asyncio.sleep(0.3)
        text = await honest(port)
        return await asyncio.gather(*slow), text

    open_secs, text = asyncio.run(attack())
    assert_served(text)
    assert all(DEADLINE_SEC - 0.5 < sec < DEADLINE_SEC + 3 for sec in open_secs), open_secs
    asyncio.run(wait_for_free_share(port))


def test_one_address_cannot_hold_every_slot_while_an_honest_kiosk_streams(door):
    ipv6_loopback_or_skip()
    _server, port = door

    async def attack() -> tuple[tuple[int, dict], str]:
        stop = asyncio.Event()

        async def hold() -> None:  # streams silence: progress, so only the share limits it
            async with connect(address(port)) as ws:
                while not stop.is_set():
                    await ws.send(SILENCE)
                    await asyncio.sleep(0.1)

        holders = [asyncio.create_task(hold()) for _ in range(PER_ADDRESS)]
        await asyncio.sleep(0.5)
        refused = await asyncio.to_thread(refusal, address(port))
        text = await honest(port)
        stop.set()
        await asyncio.gather(*holders, return_exceptions=True)
        return refused, text

    (status, body), text = asyncio.run(attack())
    assert (status, body["code"]) == (503, "ERR1007"), body
    assert "websocket.max_connections_per_address" in body["message"], body
    assert_served(text)
    asyncio.run(wait_for_free_share(port))


@pytest.mark.parametrize("first_audio", [False, True], ids=["nothing-sent", "audio-then-silence-of-the-socket"])
def test_sockets_that_send_nothing_are_closed_at_their_deadline_with_err1012(door, first_audio):
    _server, port = door

    async def idle() -> tuple[list[dict], int | None, float]:
        messages = []
        async with connect(address(port)) as ws:
            started = time.monotonic()
            if first_audio:
                await ws.send(SILENCE)
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    messages.append(json.loads(message))
            return messages, ws.close_code, time.monotonic() - started

    messages, code, open_sec = asyncio.run(idle())
    assert [(m["type"], m["code"]) for m in messages] == [("Error", "ERR1012")], messages
    assert code == 1008 and DEADLINE_SEC - 0.3 < open_sec < DEADLINE_SEC + 2, (code, open_sec)


MALFORMED = ["{", "[]", "null", '"KeepAlive"', '{"type": 5}', '{"type": "Configure2"}', '{"typ": "KeepAlive"}',
             "\u0000" * 100, "[" * 5000 + "]" * 5000]


@pytest.mark.parametrize("text", MALFORMED, ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_a_malformed_control_message_gets_an_error_frame_and_a_close(door, text):
    _server, port = door

    async def send() -> tuple[list[dict], int | None]:
        messages = []
        async with connect(address(port)) as ws:
            await ws.send(SILENCE)
            await ws.send(text)
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    messages.append(json.loads(message))
            return messages, ws.close_code

    messages, code = asyncio.run(send())
    assert [(m["type"], m.get("variant"), m["code"]) for m in messages] == [("Error", "SchemaError", "ERR1010")]
    assert code == 1008


def test_a_flood_of_malformed_messages_and_oversized_frames_leaves_the_kiosk_served_and_the_log_bounded(door):
    ipv6_loopback_or_skip()
    server, port = door
    before = server.log()

    async def flood() -> tuple[list[int | None], str]:
        async def one(i: int) -> int | None:
            for _ in range(50):  # the wave before may not have given its slots back yet: retry, as clients do
                try:
                    return await abuse(i)
                except InvalidStatus as err:
                    assert err.response.status_code == 503, err
                    await asyncio.sleep(0.05)
            raise AssertionError("the host's share never came free")

        async def abuse(i: int) -> int | None:
            async with connect(address(port), max_size=None) as ws:
                with contextlib.suppress(ConnectionClosed):
                    if i % 2:
                        await ws.send(b"\x00" * (MAX_MESSAGE_BYTES + 1))  # oversized binary frame
                    else:
                        await ws.send("{" * 100)
                    async for _ in ws:
                        pass
            return ws.close_code

        codes = []
        for _ in range(WAVES):  # waves within the host's share
            codes += await asyncio.gather(*(one(i) for i in range(PER_ADDRESS)))
        return codes, await honest(port)

    codes, text = asyncio.run(flood())
    assert_served(text)
    assert sorted(set(codes)) == [1008, 1009], codes
    added = server.log()[len(before):]
    assert "Traceback" not in added
    # Two codes (ERR1010, ERR1003), each at most 20 lines a minute (the door's ThrottledLog), for 60 refusals.
    assert added.count("appliance.door.websocket") <= 2 * 20 < len(codes), added[-3000:]


def test_an_oversized_handshake_is_refused_before_any_session(door):
    server, port = door
    status, body = refusal(address(port, query=QUERY + "&keyterm=" + "&keyterm=".join(["word"] * 500)))
    assert (status, body["code"]) == (400, "ERR1010"), body
    sessions = server.runtime.sessions.active_sessions
    assert sessions == 0, sessions
