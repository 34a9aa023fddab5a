"""TLS for the client plane: waitress has none, so when the operator's certificate is set (and
openai.tls is true) the plane's port is this terminator, and waitress listens on loopback behind it.

- The terminator accepts on `openai.host:openai.port` (its own thread and asyncio loop, so handshakes
  and upload bytes never run on the appliance's loop) and admits each connection through the plane's
  `Door` with the client's real address, before any handshake: the drain gate, the allow-list and
  the caps hold as they do without TLS. A refused client gets the coded answer over TLS.
- The handshake must finish within `openai.header_timeout_sec` (ERR1012), so a slow handshake holds a
  slot no longer than a slow header would.
- The connection is then piped, byte for byte, to waitress on 127.0.0.1 (a port of its own, 0). The
  waitress channel keeps the header and body deadlines. `PeerMap` remembers which client each
  loopback source port speaks for; `behind_tls` gives the app that client's address (REMOTE_ADDR,
  which HttpAccess reads for its allow-list, rate limit and trusted proxies) and the https scheme,
  and refuses a connection that did not come through here (a local process on the loopback port).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.frontdoor import Door, client_address
from appliance.transport.http.doors import RequestDeadlines, coded_reply

log = logging.getLogger(__name__)

COPY_BYTES = 65536
REFUSAL_SEC = 2.0  # a refused client's handshake and answer: short, since it holds no slot
LOOPBACK = "127.0.0.1"


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """TLS 1.2+ server context for HTTP/1.1 with the operator's pair (checked like gRPC's first)."""
    from appliance.transport.grpc.tls import load_tls_pair  # the same checks and messages as gRPC's

    load_tls_pair(cert_file, key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(["http/1.1"])
    return context


class PeerMap:
    """Loopback source port of a piped connection → (client address, client port). Written on the
    terminator's loop, read on waitress's worker threads: single dict operations, atomic."""

    def __init__(self) -> None:
        self._peers: dict[int, tuple[str, int]] = {}

    def add(self, port: int, peer: tuple[str, int]) -> None:
        self._peers[port] = peer

    def remove(self, port: int, peer: tuple[str, int]) -> None:
        if self._peers.get(port) == peer:
            del self._peers[port]

    def get(self, port: object) -> tuple[str, int] | None:
        try:
            return self._peers.get(int(str(port)))
        except ValueError:
            return None


def behind_tls(app: Callable, peers: PeerMap) -> Callable:
    """The WSGI app as the client sees it: its address, its port, https."""

    def wrapped(environ, start_response):
        peer = peers.get(environ.get("REMOTE_PORT"))
        if peer is None:
            body = json.dumps({"code": "ERR1005", "message": "connect through the TLS port (openai.port), "
                               "not the loopback port behind it"}).encode()
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer[0], str(peer[1])
        environ["wsgi.url_scheme"], environ["HTTPS"] = "https", "on"
        return app(environ, start_response)

    return wrapped


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for a bind address, "*" (every address) or a comma-separated list, on one port
    (with port 0, the port the first one got)."""
    socks: list[socket.socket] = []
    try:
        for name in [h.strip().strip("[]") for h in host.split(",") if h.strip()] or [host]:
            at = port or (socks[0].getsockname()[1] if socks else 0)
            if name in ("*", ""):
                dual = socket.has_dualstack_ipv6()
                socks.append(socket.create_server(("", at), family=socket.AF_INET6 if dual else socket.AF_INET,
                                                  dualstack_ipv6=dual, backlog=128))
            else:
                family = socket.getaddrinfo(name, at, type=socket.SOCK_STREAM)[0][0]
                socks.append(socket.create_server((name, at), family=family, backlog=128))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class TlsFront:
    """The TLS listener of the client plane, bound at construction (a taken port fails startup)."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, door: Door, deadlines: RequestDeadlines,
                 backend_port: Callable[[], int], peers: PeerMap, name: str = "https-client"):
        self._context, self.door, self._deadlines = context, door, deadlines
        self._backend_port, self._peers, self.name = backend_port, peers, name
        self._tasks: set[asyncio.Task] = set()  # accept loops and connections, cancelled at stop
        self._sockets = bind(host, port)
        for sock in self._sockets:
            sock.setblocking(False)
        self.host, self.port = host, int(self._sockets[0].getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def start(self) -> TlsFront:
        self._thread.start()
        for sock in self._sockets:
            self._loop.call_soon_threadsafe(self._spawn, self._accept(sock))
        log.info("HTTPS %s listening on %s:%d", self.name, self.host, self.port)
        return self

    def stop(self, timeout_sec: float = 2.0) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(timeout_sec)
            except (TimeoutError, asyncio.CancelledError):
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_sec)
        for sock in self._sockets:
            sock.close()
        if not self._thread.is_alive():
            self._loop.close()

    async def _shut(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def _spawn(self, work) -> None:
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, addr = await self._loop.sock_accept(listener)
            except OSError as err:  # out of descriptors, or the client left at once: go on accepting
                log.debug("%s: accept failed: %s", self.name, err)
                await asyncio.sleep(0.05)
                continue
            # asyncio turns Nagle off only for sockets that say IPPROTO_TCP, and these say 0: without this
            # each answer waited ~40 ms for the client's delayed ACK.
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                conn.close()  # gone already
                continue
            self._spawn(self._connection(conn, addr))

    async def _connection(self, conn: socket.socket, addr) -> None:
        """Admit by the client's address, before any handshake; then TLS, then the pipe to waitress."""
        parsed = client_address(str(addr[0]))
        address = str(parsed) if parsed is not None else str(addr[0])
        try:
            try:
                slot = self.door.admit(address)
            except ApplianceError as err:
                await self._refuse(conn, err)
                return
            with slot:
                streams = await self._handshake(conn)
                if streams is None:
                    return
                try:
                    await self._forward(*streams, (address, int(addr[1])))
                finally:
                    streams[1].close()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client or waitress went away mid-copy
        # `conn` is never closed here: its TLS transport owns it (and closes it, a failed handshake too).

    async def _tls(self, conn: socket.socket, limit: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The accepted socket is wrapped before anything reads it, so the ClientHello reaches the TLS layer.
        reader = asyncio.StreamReader(limit=COPY_BYTES)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await self._loop.connect_accepted_socket(lambda: protocol, conn, ssl=self._context,
                                                                ssl_handshake_timeout=limit)
        return reader, asyncio.StreamWriter(transport, protocol, reader, self._loop)

    async def _handshake(self, conn: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        limit = self._deadlines.header_sec
        try:
            return await asyncio.wait_for(self._tls(conn, limit + 1), limit)
        except TimeoutError:
            err = ApplianceError("ERR1012", f"no TLS handshake within {limit:g} s ({self._deadlines.header_setting})")
            self.door.refused(err, "handshake too slow")
        except (OSError, ConnectionError) as err:  # not TLS (plain HTTP on this port), or an untrusting client
            log.debug("%s: TLS handshake failed: %s", self.name, err)
        return None

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       peer: tuple[str, int]) -> None:
        back_reader, back_writer = await asyncio.open_connection(LOOPBACK, self._backend_port(), limit=COPY_BYTES)
        local_port = int(back_writer.get_extra_info("sockname")[1])
        self._peers.add(local_port, peer)  # before any byte goes through: the app finds it
        try:
            await _pipe(reader, writer, back_reader, back_writer)
        finally:
            self._peers.remove(local_port, peer)
            back_writer.close()

    async def _refuse(self, conn: socket.socket, err: ApplianceError) -> None:
        """The coded refusal, over TLS so that the client can read it; closed whatever happens."""
        try:
            async with asyncio.timeout(REFUSAL_SEC):
                _, writer = await self._tls(conn, REFUSAL_SEC)
                try:
                    writer.write(coded_reply(err))
                    await writer.drain()
                finally:
                    writer.close()
        except (TimeoutError, OSError, ConnectionError):
            pass


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(COPY_BYTES):
        sink.write(data)
        await sink.drain()  # back-pressure: a slow reader on one side slows the other


async def _pipe(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                back_reader: asyncio.StreamReader, back_writer: asyncio.StreamWriter) -> None:
    """Both directions until waitress closes (it closes on its deadlines, on `Connection: close`, and
    when the client hangs up: the client's end is passed on as a half-close, as a direct client's is)."""
    upstream = asyncio.ensure_future(_copy(client_reader, back_writer))
    downstream = asyncio.ensure_future(_copy(back_reader, client_writer))
    try:
        done, _ = await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        if upstream in done and downstream not in done and upstream.exception() is None \
                and back_writer.can_write_eof():
            back_writer.write_eof()  # the client's clean end: waitress answers what it has, then closes
            await asyncio.wait([downstream])
    finally:
        for task in (upstream, downstream):
            task.cancel()
        await asyncio.gather(upstream, downstream, return_exceptions=True)
