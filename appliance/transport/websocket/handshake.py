"""Everything before the upgrade: the door's slot, the captions page, and the session a `/v1/listen`
request asks for.

A connection takes its `Door` slot at TCP accept, before the TLS handshake, so a host that opens
connections and never finishes a handshake (TLS or HTTP) holds at most its share, each for at most
`websocket.handshake_timeout_sec` from accept. The listener is plain TCP; TLS is started here, on the
accepted socket (`loop.start_tls`), once the slot is taken: asyncio's own TLS server would run the
handshake before the connection (and its slot) exists. A GET without an upgrade is a file of the
captions page. An upgrade to `/v1/listen` is checked whole before it is accepted: where plain ws:// is
allowed, the query options, the api key, then `SessionService.create_session` (auth, caps, rate
limits, model and language); any refusal is an HTTP error with the {code, message} body.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from appliance.config import AppConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import Door, Slot, client_address, peer_label
from appliance.sessions import SessionService
from appliance.streaming.session import SessionRequest, SessionSettings
from appliance.transport.websocket.options import LiveOptions, parse_options
from appliance.transport.websocket.static import coded, static_file

LISTEN_PATHS = ("/v1/listen", "/v1/listen/")
AUTH_SCHEMES = ("token", "bearer")


@dataclass(frozen=True)
class Accepted:
    """An upgrade that passed every check: the options it asked for and the session made for it."""

    options: LiveOptions
    settings: SessionSettings


class LiveConnection(ServerConnection):
    """A websockets connection that holds a door slot from TCP accept (before TLS) to close."""

    door: Door
    service: SessionService
    tls: ssl.SSLContext | None = None  # wss://: the handshake is started on the accepted socket
    handshake_sec: float = 10.0  # TLS and HTTP upgrade together, from accept
    pending_tls: set[asyncio.Task[None]] = set()  # noqa: RUF012  # per listener (the server's subclass sets its own)
    slot: Slot | None = None
    refusal: ApplianceError | None = None
    address: str = "unknown"
    peer: str = "unknown"
    accepted: Accepted | None = None
    streamed = False  # the handler took the session over (else it is discarded at close)
    _secure = False  # the TLS handshake finished and websockets has the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host, port = (transport.get_extra_info("peername") or ("unknown", 0))[:2]
        ip = client_address(str(host))
        self.address = str(ip) if ip is not None else "unknown"
        self.peer = peer_label(ip, int(port))
        try:
            self.slot = self.door.admit(self.address, "new WebSocket connections")
        except ApplianceError as err:  # answered in process_request, as an HTTP error (counted by the door)
            self.refusal = err
        loop = asyncio.get_running_loop()
        loop.call_later(self.handshake_sec, self._overdue, transport)
        if self.tls is None:
            self._secure = True
            super().connection_made(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing is read as HTTP before TLS is up
        task = loop.create_task(self._start_tls(transport))
        self.pending_tls.add(task)
        task.add_done_callback(self.pending_tls.discard)

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        assert self.tls is not None
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport, self, self.tls, server_side=True, ssl_handshake_timeout=self.handshake_sec)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            secure = None  # a client that breaks off or fails the handshake: nothing to answer over TLS
        except asyncio.CancelledError:
            transport.abort()
            self._release()
            raise
        if secure is None or transport.is_closing():
            transport.abort()
            self._release()
            return
        self._secure = True
        super().connection_made(secure)

    def _overdue(self, transport: asyncio.BaseTransport) -> None:
        """The handshake deadline, from accept: a connection not upgraded (or answered) by then is cut."""
        if (not self._secure or self.protocol.state is State.CONNECTING) and isinstance(transport, asyncio.Transport):
            transport.abort()

    def _release(self) -> None:
        if self.slot is not None:
            self.slot.release()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._secure:  # lost during the TLS handshake: websockets never had this connection
            self._release()
            return
        try:
            if self.accepted is not None and not self.streamed:
                self.service.discard_unused(self.accepted.settings.session_id)
        finally:
            self._release()
            super().connection_lost(exc)


def api_key(request: Request) -> tuple[str | None, str | None]:
    """(key, Authorization header) as Deepgram clients send them: `Authorization: Token <key>` or
    `Bearer <key>`, or the browser's `Sec-WebSocket-Protocol: token, <key>`."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() not in AUTH_SCHEMES or not key.strip():
            raise ApplianceError("ERR1004", "malformed Authorization header; expected 'Token <api key>' or "
                                 "'Bearer <api key>'")
        return key.strip(), header
    offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]
    if len(offered) >= 2 and offered[0].lower() in AUTH_SCHEMES and offered[1]:
        return offered[1], None
    return None, None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Handshake:
    """`process_request` for the listener: None accepts the upgrade, a Response answers instead."""

    def __init__(self, config: AppConfig, service: SessionService, *, tls: bool):
        self._config = config
        self._service = service
        self._tls = tls

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, LiveConnection)
        if connection.refusal is not None:
            return coded(connection.refusal)
        url = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return static_file(url.path)
        try:
            if url.path not in LISTEN_PATHS:
                raise ApplianceError("ERR1018", f"no WebSocket route {url.path[:80]!r}; the live stream is at "
                                     "/v1/listen")
            connection.accepted = self._accept(connection, request, url.query)
        except ApplianceError as err:
            connection.door.refused(err, "upgrade refused")
            return coded(err)
        return None

    def _accept(self, connection: LiveConnection, request: Request, query: str) -> Accepted:
        ws = self._config.websocket
        if not self._tls and ws.allow_plaintext == "loopback" and not _is_loopback(connection.address):
            raise ApplianceError("ERR1005", "plain ws:// is open to loopback clients only on this server; use "
                                 "wss:// once the operator sets tls.cert_file/tls.key_file (or "
                                 "websocket.allow_plaintext: any on a trusted network)")
        options = parse_options(query, self._service.defaults().model_ids)
        key, authorization = api_key(request)
        metadata = {}
        if self._config.auth.create_session_auth_profile == "signed_token" and authorization:
            metadata = {"authorization": authorization}  # "Bearer <ts>:<sig>", checked as gRPC's is
            key = None
            if (ts := request.headers.get("x-stt-auth-ts")) is not None:
                metadata["x-stt-auth-ts"] = ts
        attributes = {"speech_events": "true", "emit_final_on_vad": "true",
                      "partial": "true" if options.interim_results else "false",
                      "word_timestamps": "true" if ws.word_timestamps else "false"}
        if key:
            attributes["api_key"] = key
        if options.hotwords:
            attributes["decode.hotwords"] = ", ".join(options.hotwords)
        session = SessionRequest(
            attributes=attributes, vad_mode="continue", language=options.language, model_id=options.model_id,
            vad_silence_sec=options.endpointing_ms / 1000 if options.endpointing_ms is not None else None,
            protocol="websocket")
        settings = self._service.create_session(session, peer=connection.peer, metadata=metadata)
        return Accepted(options, settings)

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        """A browser that sent `token, <key>` must hear one of them back, and never the key."""
        return next((p for p in offered if p.lower() in AUTH_SCHEMES), None)
