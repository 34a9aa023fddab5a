"""The WebSocket door over TLS against one hostile host (127.0.0.1) while an honest kiosk (::1) is
served: TLS handshakes that never finish take their door slot at TCP accept, so they hold at most the
host's share (the host's next wss:// client hears 503 ERR1007 while they hang) and are cut at the
handshake deadline; the kiosk on the other address connects and is served throughout."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
from websockets.asyncio.client import connect

from clients.corpus import wer
from tests.adversarial.test_websocket_abuse import trickled
from tests.adversarial.victim import ipv6_loopback_or_skip
from tests.conftest import serve_in_process
from tests.test_websocket import COMMAND, COMMAND_TEXT, QUERY, finals_text, free_port, pcm16, refusal, stream

DEADLINE_SEC = 2.0
MAX_CONNECTIONS = 8
PER_ADDRESS = 4
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01"  # a TLS record header and the first byte of a ClientHello


@pytest.fixture(scope="module")
def tls_door(request, tmp_path_factory):
    """(appliance, port, client context): wss:// with a self-signed certificate, small caps, short deadlines."""
    from tests.test_tls import make_self_signed

    certs = make_self_signed(tmp_path_factory.mktemp("ws-tls-abuse"), "server")
    port = free_port()
    server = serve_in_process(request, "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key), env={
        "STT_WEBSOCKET_HOST": "*", "STT_WEBSOCKET_PORT": str(port),
        "STT_WEBSOCKET_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "STT_WEBSOCKET_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
        "STT_WEBSOCKET_HANDSHAKE_TIMEOUT_SEC": str(DEADLINE_SEC)})
    return server, port, ssl.create_default_context(cafile=str(certs.cert))


async def slow_tls_handshake(port: int) -> float:
    """A ClientHello that never ends (one byte every 0.3 s); seconds until the server cuts it."""
    return await trickled(port, CLIENT_HELLO_START, lambda _: b"\x00")


def test_slow_tls_handshakes_hold_one_hosts_share_and_an_honest_kiosk_still_connects(tls_door):
    ipv6_loopback_or_skip()
    _server, port, context = tls_door

    async def attack() -> tuple[list[float], tuple[int, dict], str]:
        slow = [asyncio.create_task(slow_tls_handshake(port)) for _ in range(3 * PER_ADDRESS)]
        await asyncio.sleep(0.5)
        # The host's share is taken by handshakes still in TLS: its next client is refused...
        refused = await asyncio.to_thread(refusal, f"wss://127.0.0.1:{port}/v1/listen?{QUERY}", ssl=context)
        # ...while the kiosk on another address is served.
        messages = await stream(f"wss://[::1]:{port}/v1/listen?{QUERY}", pcm16(COMMAND), pace=4.0, ssl=context,
                                server_hostname="localhost")
        return await asyncio.gather(*slow), refused, finals_text(messages)

    open_secs, (status, body), text = asyncio.run(attack())
    assert (status, body["code"]) == (503, "ERR1007") and "max_connections_per_address" in body["message"], body
    assert wer(COMMAND_TEXT, text) <= 0.25, text
    assert all(DEADLINE_SEC - 0.5 < sec < DEADLINE_SEC + 3 for sec in open_secs), open_secs

    async def share_free_again() -> None:  # every slot came back when the handshakes were cut
        deadline = time.monotonic() + 10
        while True:
            try:
                async with connect(f"wss://127.0.0.1:{port}/v1/listen?{QUERY}", ssl=context, open_timeout=5):
                    return
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)

    asyncio.run(share_free_again())
