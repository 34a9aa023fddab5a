"""The WebSocket listener: `websockets` on the appliance's event loop, the front door in front of it.

wss:// with the operator's certificate (tls.cert_file/tls.key_file, the gRPC pair, checked the same
way) unless websocket.tls is false; without one, plain ws:// as websocket.allow_plaintext says
(loopback clients only by default: a fresh box works for a browser on the box itself, and
http://localhost is a secure context for the microphone). The `Door` ("websocket") caps connections
globally and per address, handshakes included; `Handshake` answers the page and checks upgrades;
`LiveSession` runs the stream. Draining is the shared `DrainGate`: new upgrades hear ERR1015, open
streams end through `SessionService.drain`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from websockets.asyncio.server import Server, serve

from appliance.config import AppConfig
from appliance.frontdoor import AddressPolicy, Door, DoorLimits, DrainGate
from appliance.security.http_access import parse_networks
from appliance.sessions import SessionService
from appliance.transport.grpc.tls import load_tls_pair  # the same checks and messages as gRPC's
from appliance.transport.websocket.handshake import Handshake, LiveConnection
from appliance.transport.websocket.live import LiveSession
from appliance.transport.websocket.results import request_id

log = logging.getLogger(__name__)
# websockets' own per-connection lines ("connection open", "connection rejected") are not the door's to
# log: refusals are counted and logged (throttled) by the Door; only its warnings and errors pass.
wire_log = logging.getLogger("appliance.transport.websocket.wire")
wire_log.setLevel(logging.WARNING)
CLOSE_TIMEOUT_SEC = 2.0


def websocket_door(config: AppConfig, drain: DrainGate, on_refused: Callable[[str, str], None] | None = None) -> Door:
    ws = config.websocket
    limits = DoorLimits(ws.max_connections, ws.max_connections_per_address, "websocket")
    policy = AddressPolicy(parse_networks(ws.allow_networks, what="websocket.allow_networks"),
                           setting="websocket.allow_networks")
    return Door("websocket", limits, drain, policy, on_refused=on_refused)


def tls_context(config: AppConfig) -> ssl.SSLContext | None:
    """The server context for wss://, or None for plain ws:// (refused by config where not allowed)."""
    tls = config.tls
    if not (config.websocket.tls and tls.cert_file and tls.key_file):
        return None
    pair = load_tls_pair(tls.cert_file, tls.key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(pair.cert_file), str(pair.key_file))
    return context


def bind_hosts(config: AppConfig) -> str | list[str] | None:
    """websocket.host (empty: server.http_host): '*' is every address, a comma-separated list each of them."""
    host = config.websocket.host or config.server.http_host
    hosts = [h.strip() for h in host.split(",") if h.strip()]
    if "*" in hosts:
        return None
    return hosts[0] if len(hosts) == 1 else hosts


class WebSocketServer:
    def __init__(self, config: AppConfig, service: SessionService, *, drain: DrainGate,
                 on_refused: Callable[[str, str], None] | None = None):
        self._config = config
        self._service = service
        self.door = websocket_door(config, drain, on_refused)
        self._ssl = tls_context(config)
        self._handshake = Handshake(config, service, tls=self._ssl is not None)
        self._server: Server | None = None
        self._connection: type[LiveConnection] | None = None
        self.port: int | None = None

    @property
    def scheme(self) -> str:
        return "wss" if self._ssl is not None else "ws"

    async def start(self) -> None:
        ws = self._config.websocket
        door, service = self.door, self._service

        class Connection(LiveConnection):
            pass

        Connection.door, Connection.service = door, service
        Connection.tls, Connection.handshake_sec, Connection.pending_tls = self._ssl, ws.handshake_timeout_sec, set()
        self._connection = Connection
        self._server = await serve(
            self._handle, bind_hosts(self._config), ws.port,  # type: ignore[arg-type]  # a list: each address
            create_connection=Connection,  # TLS, if any, is the connection's own: started once its slot is taken
            process_request=self._handshake.process_request, select_subprotocol=self._handshake.select_subprotocol,
            process_response=_request_id_header, open_timeout=ws.handshake_timeout_sec,
            max_size=ws.max_message_bytes, max_queue=4, close_timeout=CLOSE_TIMEOUT_SEC, compression=None,
            ping_interval=20, ping_timeout=20, server_header=None, logger=wire_log)
        sockets = list(self._server.sockets)
        self.port = sockets[0].getsockname()[1] if sockets else ws.port
        log.info("WebSocket listener (Deepgram-compatible /v1/listen, captions page /) on %s://%s:%d", self.scheme,
                 self._config.websocket.host or self._config.server.http_host, self.port)

    async def _handle(self, connection) -> None:
        assert isinstance(connection, LiveConnection)
        await LiveSession(connection, self._config.websocket).run()

    async def wait_idle(self, timeout_sec: float) -> None:
        """After the drain: give connections whose stream it ended a moment to hear ERR1015."""
        deadline = asyncio.get_running_loop().time() + timeout_sec
        while self.door.open_connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._connection is not None:
            for task in list(self._connection.pending_tls):  # handshakes under way: nothing to drain
                task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _request_id_header(connection, request, response):
    """Deepgram names the request in a header of the upgrade answer too."""
    accepted = getattr(connection, "accepted", None)
    if accepted is not None and response.status_code == 101:
        response.headers["dg-request-id"] = request_id(accepted.settings.session_id)
    return None
