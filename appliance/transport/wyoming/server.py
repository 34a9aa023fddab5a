"""The Wyoming TCP server: wyoming's `AsyncTcpServer` with the front door in front of each connection.

Before a handler exists the `Door` checks the drain gate, the client's address against
`wyoming.allow_networks` (Wyoming has no credentials, so the network is the only identity), and the
open connections against `wyoming.max_connections` and this address's share of them
(`wyoming.max_connections_per_address`, held below the total so one host cannot take every slot);
a refused client gets one coded `error` event. Sessions and streams then meet the same admission,
caps and rate limits as gRPC, with the client IP as identity. Draining is the shared `DrainGate`;
open streams finish through `SessionService.drain` like any other.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
from collections.abc import Callable

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from appliance import __version__
from appliance.config import WyomingConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import AddressPolicy, Door, DoorLimits, DrainGate, client_address, peer_label
from appliance.security.http_access import parse_networks
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


def wyoming_door(config: WyomingConfig, drain: DrainGate,
                 on_refused: Callable[[str, str], None] | None = None) -> Door:
    limits = DoorLimits(config.max_connections, config.max_connections_per_address, "wyoming")
    policy = AddressPolicy(parse_networks(config.allow_networks, what="wyoming.allow_networks"),
                           setting="wyoming.allow_networks")
    return Door("wyoming", limits, drain, policy, on_refused=on_refused)


class _Refused(AsyncEventHandler):
    """Stands in for a handler when the door refuses: says why, once, and closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, err: ApplianceError):
        super().__init__(reader, writer)
        self._error = Error(text=err.message, code=err.code)

    async def run(self) -> None:
        await send_error_and_close(self.reader, self.writer, self._error)

    async def handle_event(self, event: Event) -> bool:
        return False


class WyomingServer:
    def __init__(self, config: WyomingConfig, service: SessionService, *, drain: DrainGate,
                 on_refused: Callable[[str, str], None] | None = None):
        self._config = config
        self._service = service
        # drain: the runtime's one gate (runtime.drain_gate); on_refused(code, door) counts refusals.
        self.door = wyoming_door(config, drain, on_refused)
        # "*": every address of both families ("" to asyncio; "::" alone would be IPv6 only).
        self._server = AsyncTcpServer("" if config.host == "*" else config.host, config.port)
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
        host, port = (writer.get_extra_info("peername") or ("unknown", 0))[:2]
        ip = client_address(str(host))
        try:
            slot = self.door.admit(str(ip) if ip is not None else "unknown", "new Wyoming connections")
        except ApplianceError as err:  # logged (throttled) by the door
            return _Refused(reader, writer, err)
        return WyomingHandler(reader, writer, service=self._service, info=describe(self._service),
                              peer=peer_label(ip, int(port)), config=self._config, slot=slot)

    async def stop_accepting(self) -> None:
        """Draining: no longer announced (the shared drain gate tells new connections ERR1015)."""
        if self._announcement is not None:
            await self._announcement.unregister()

    async def wait_idle(self, timeout_sec: float) -> None:
        """After the drain: give connections whose stream it ended a moment to hear ERR1015 at their
        next chunk and close, rather than cutting them off mid-send."""
        deadline = asyncio.get_running_loop().time() + timeout_sec
        while self.door.open_connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._announcement is not None:
            await self._announcement.unregister()
        await self._server.stop()
