"""The Wyoming TCP server: wyoming's `AsyncTcpServer` with a gate in front of each connection.

Before a handler exists the gate checks the client's address against `wyoming.allow_networks`
(Wyoming has no credentials, so the network is the only identity) and the count of open
connections against `wyoming.max_connections`; a refused client gets one coded `error` event.
Sessions and streams then meet the same admission, caps and rate limits as gRPC, with the client
IP as identity. Draining closes the port to new connections; open streams finish through
`SessionService.drain` like any other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import socket

from wyoming.error import Error
from wyoming.info import AsrModel, AsrProgram, Attribution, Info
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from appliance import __version__
from appliance.config import WyomingConfig
from appliance.security.admission import grpc_style_peer
from appliance.security.http_access import IpNetwork, parse_networks
from appliance.sessions import SessionService
from appliance.transport.wyoming.discovery import Announcement, lan_address
from appliance.transport.wyoming.handler import WyomingHandler, send_error_and_close

log = logging.getLogger(__name__)
ATTRIBUTION = Attribution(name="OpenAI Whisper", url="https://github.com/openai/whisper")


def describe(service: SessionService) -> Info:
    """The `info` answer: one ASR program whose models are the loaded ones, with their languages."""
    models = [AsrModel(name=model_id, description=f"Whisper {model_id}", attribution=ATTRIBUTION, installed=True,
                       version=None, languages=languages)
              for model_id, languages in service.model_languages().items()]
    return Info(asr=[AsrProgram(name="stt-appliance", description="streaming Whisper speech-to-text appliance",
                                attribution=ATTRIBUTION, installed=True, version=__version__, models=models,
                                supports_transcript_streaming=True)])


def client_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's address; an IPv4 client of a dual-stack socket ("::ffff:10.0.0.5") as IPv4, so
    allow-lists and per-IP caps see the same address whichever way the port was bound."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return mapped or ip


class _Refused(AsyncEventHandler):
    """Stands in for a handler when the gate refuses: says why, once, and closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, code: str, text: str):
        super().__init__(reader, writer)
        self._error = Error(text=text, code=code)

    async def run(self) -> None:
        await send_error_and_close(self.reader, self.writer, self._error)

    async def handle_event(self, event) -> bool:
        return False


class WyomingServer:
    def __init__(self, config: WyomingConfig, service: SessionService):
        self._config = config
        self._service = service
        self._allowed: tuple[IpNetwork, ...] = parse_networks(config.allow_networks, what="wyoming.allow_networks")
        # "*": every address of both families ("" to asyncio; "::" alone would be IPv6 only).
        self._server = AsyncTcpServer("" if config.host == "*" else config.host, config.port)
        self._open = 0
        self._accepting = True
        self._announcement: Announcement | None = None

    async def start(self) -> None:
        await self._server.start(self._handler)
        if self._config.zeroconf:
            await self._announce()

    async def _announce(self) -> None:
        """Announce the port by mDNS; a box that cannot (no zeroconf package, no usable address)
        says why instead of running undiscoverable."""
        if importlib.util.find_spec("zeroconf") is None:
            raise ValueError("wyoming.zeroconf needs the zeroconf package: pip install 'stt-appliance[discovery]'")
        config = self._config
        try:
            address = config.zeroconf_address or lan_address()
        except OSError as err:
            raise ValueError(f"no LAN address to announce ({err}); set wyoming.zeroconf_address") from None
        name = config.zeroconf_name or f"stt-appliance-{socket.gethostname()}"
        announcement = Announcement(name, address, config.port)
        try:
            await announcement.register()
        except Exception as err:  # zeroconf's: NonUniqueNameException (the name is taken), interface errors
            await announcement.unregister()
            raise ValueError(f"zeroconf announcement of {name!r} at {address} failed: {type(err).__name__} {err}; "
                             "set wyoming.zeroconf_name / wyoming.zeroconf_address") from None
        self._announcement = announcement
        log.info("Wyoming announced by zeroconf as %r at %s:%d", name, address, config.port)

    def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> AsyncEventHandler:
        address = writer.get_extra_info("peername") or ("unknown", 0)
        ip = client_ip(str(address[0]))
        refusal = self._gate(ip)
        if refusal:
            code, text = refusal
            log.info("Wyoming connection refused: %s", code)
            return _Refused(reader, writer, code, text)
        self._open += 1
        return WyomingHandler(reader, writer, service=self._service, info=describe(self._service),
                              peer=grpc_style_peer(ip, int(address[1])), api_key=self._config.api_key,
                              max_event_bytes=self._config.max_event_bytes,
                              idle_timeout_sec=self._config.idle_timeout_sec, on_close=self._closed)

    def _closed(self) -> None:
        self._open -= 1

    def _gate(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> tuple[str, str] | None:
        if not self._accepting:
            return "ERR1015", "the server is draining and accepts no new transcriptions"
        if self._allowed and (ip is None or not any(ip in network for network in self._allowed)):
            return "ERR1005", "this client's address is not in wyoming.allow_networks"
        if self._open >= self._config.max_connections:
            return "ERR1007", f"wyoming.max_connections={self._config.max_connections} connections are open"
        return None

    async def stop_accepting(self) -> None:
        """Draining: no longer announced, new connections are told ERR1015, open ones finish."""
        self._accepting = False
        if self._announcement is not None:
            await self._announcement.unregister()

    async def wait_idle(self, timeout_sec: float) -> None:
        """After the drain: give connections whose stream it ended a moment to hear ERR1015 at their
        next chunk and close, rather than cutting them off mid-send."""
        deadline = asyncio.get_running_loop().time() + timeout_sec
        while self._open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._announcement is not None:
            await self._announcement.unregister()
        await self._server.stop()
