"""Waitress behind the front-door kit: connections are admitted by a `Door` when they are accepted
and released when they close, and a request must arrive within deadlines a trickle cannot extend.

Waitress alone has one connection limit for everyone, and its `channel_timeout` starts again with
every byte, so a hundred connections that send half a header and then a byte now and then hold every
slot for as long as they like. Here:
- `DoorServer.handle_accept` asks the door first (drain gate, allow-list, global and per-address
  caps); a refused connection gets a one-line coded HTTP answer and is closed;
- `DoorChannel` remembers when it began waiting for its next request (when it opened, or when it
  finished answering the last one); the server's maintenance pass closes it once the header has
  taken longer than `header_sec`, or the body longer than `body_sec` after that, whatever it sent.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from appliance.errors import ApplianceError
from appliance.frontdoor import Door, Slot, client_address

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_SEC = 1  # how often deadlines are checked (waitress's own default is 30 s)
_REASONS = {403: "Forbidden", 408: "Request Timeout", 503: "Service Unavailable"}


@dataclass(frozen=True)
class RequestDeadlines:
    header_sec: float  # waiting for a request → its header complete
    body_sec: float  # the header complete → the body complete
    header_setting: str  # the config keys named in the refusals
    body_setting: str


def coded_reply(err: ApplianceError, status: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with the {code, message} body, for a connection closed before any request."""
    status = status or err.http_status
    body = json.dumps({"code": err.code, "message": err.message}).encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    if err.retry_after_sec is not None:
        head.append(f"Retry-After: {max(1, round(err.retry_after_sec))}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _send_and_close(conn: socket.socket, reply: bytes) -> None:
    try:
        conn.setblocking(False)
        conn.send(reply)  # a few hundred bytes: fits the fresh socket's send buffer, never blocks the loop
        conn.shutdown(socket.SHUT_WR)
        conn.recv(65536)  # what the client sent already: closing with it unread would reset the answer away
    except OSError:
        pass  # the client is gone already
    finally:
        conn.close()


class DoorChannel(HTTPChannel):
    """One admitted connection; its door slot is released however it closes."""

    slot: Slot | None = None
    in_service = False

    def __init__(self, server, sock, addr, adj, map=None):
        self.waiting_since = time.monotonic()  # set before registering: maintenance may read it at once
        super().__init__(server, sock, addr, adj, map=map)

    def service(self) -> None:
        # On a worker thread. `in_service` covers the moment waitress has dropped the answered request
        # and this has not yet restarted the clock.
        self.in_service = True
        try:
            super().service()
        finally:
            self.waiting_since = time.monotonic()
            self.in_service = False

    def overdue(self, now: float, deadlines: RequestDeadlines) -> ApplianceError | None:
        """ERR1012 when the request being received is past its deadline; None otherwise."""
        if self.in_service or self.requests or self.will_close:
            return None  # being answered (or closing): the app's own timeouts apply
        waited = now - self.waiting_since
        request = self.request
        receiving_body = request is not None and request.headers_finished
        if not receiving_body and not self.total_outbufs_len:
            if waited > deadlines.header_sec:
                return ApplianceError("ERR1012", f"no complete request header within {deadlines.header_sec:g} s "
                                      f"({deadlines.header_setting})")
        elif waited > deadlines.header_sec + deadlines.body_sec:
            what = "the answer was not read" if self.total_outbufs_len else "the request body did not arrive"
            return ApplianceError("ERR1012", f"{what} within {deadlines.body_sec:g} s ({deadlines.body_setting})")
        return None

    def del_channel(self, map=None) -> None:
        super().del_channel(map)
        if self.slot is not None:
            self.slot.release()  # idempotent: close paths may run more than once


class DoorServer(TcpWSGIServer):
    """A waitress TCP listener whose connections go through `door` and `deadlines`."""

    channel_class = DoorChannel

    def __init__(self, application, *, door: Door, deadlines: RequestDeadlines, **kw):
        self.door = door
        self.deadlines = deadlines
        super().__init__(application, **kw)

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
            if pair is None:
                return
            conn, addr = pair
            self.set_socket_options(conn)
        except OSError:
            return  # the client left before we got to it
        host = addr[0] if isinstance(addr, tuple) else str(addr)
        parsed = client_address(host)
        try:
            slot = self.door.admit(str(parsed) if parsed is not None else host)
        except ApplianceError as err:
            _send_and_close(conn, coded_reply(err))
            return
        try:
            channel = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        except BaseException:
            slot.release()
            conn.close()
            raise
        channel.slot = slot

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # waitress's idle cut (channel_timeout)
        moment = time.monotonic()
        for channel in list(self.active_channels.values()):
            err = channel.overdue(moment, self.deadlines) if isinstance(channel, DoorChannel) else None
            if err is not None:
                self.door.refused(err, "request too slow")
                _answer_late(channel, err)


def _answer_late(channel: DoorChannel, err: ApplianceError) -> None:
    """A 408 with the code, then close (on the loop's thread, where the channel lives)."""
    if not channel.total_outbufs_len and channel.socket is not None:  # never inside an answer being sent
        try:
            channel.socket.send(coded_reply(err, 408))
        except OSError:
            pass
    channel.will_close = True  # writable() turns true: the loop closes it on its next pass
