"""Runs a Falcon app under waitress on a background thread of the appliance process, its connections
admitted through a front door (`doors.DoorServer`)."""

from __future__ import annotations

import logging
import threading

from waitress.adjustments import Adjustments
from waitress.task import ThreadedTaskDispatcher
from waitress.wasyncore import close_all, loop

from appliance.frontdoor import Door, DoorLimits, DrainGate
from appliance.transport.http.doors import MAINTENANCE_INTERVAL_SEC, DoorServer, RequestDeadlines

log = logging.getLogger(__name__)

HTTP_THREADS = 4  # health probes, scrapes, the status page and an admin load can run at once
# waitress's own cap (its default is 1 GiB): a chunked body with no Content-Length is spooled up to here
# before the app's 64 KiB limit can see it.
MAX_SPOOLED_BODY_BYTES = 1024 * 1024
# Room above the door's cap in waitress's own connection limit, which counts the listening socket and
# the wake-up pipe too: the door refuses with a code before waitress would stop accepting.
_WAITRESS_HEADROOM = 8
DEFAULT_DEADLINES = RequestDeadlines(header_sec=10.0, body_sec=10.0, header_setting="server.http_header_timeout_sec",
                                     body_setting="server.http_header_timeout_sec")


def listen_spec(host: str, port: int) -> str:
    """waitress's `listen` for a bind address, "*" (every address) or a comma-separated list of them."""
    hosts = [h.strip() for h in host.split(",") if h.strip()] or [host]
    return " ".join(f"[{h}]:{port}" if ":" in h and not h.startswith("[") else f"{h}:{port}" for h in hosts)


def _with_port(sockinfo: tuple, port: int) -> tuple:
    family, kind, proto, address = sockinfo
    return family, kind, proto, (address[0], int(port), *address[2:])


def default_door() -> Door:
    """The door of a server built without one (tests, tools): the operator plane's default caps."""
    return Door("http", DoorLimits(max_connections=32, max_per_address=8, setting="server",
                                   total_key="http_max_connections",
                                   per_address_key="http_max_connections_per_address"), DrainGate())


class HttpServer:
    def __init__(self, app, host: str, port: int, *, threads: int = HTTP_THREADS,
                 max_body_bytes: int = MAX_SPOOLED_BODY_BYTES, door: Door | None = None,
                 deadlines: RequestDeadlines = DEFAULT_DEADLINES, name: str = "http"):
        # Binds now, so a taken port fails startup before the model loads. A body declared larger
        # than max_body_bytes is refused by waitress itself (413) before any of it is read; bodies
        # above 512 KiB are spooled to a temporary file, not held in memory.
        self.door = door or default_door()
        adj = Adjustments(listen=listen_spec(host, port), threads=threads, ident="stt-appliance",
                          max_request_body_size=max_body_bytes,
                          clear_untrusted_proxy_headers=False,  # X-Forwarded-For: HttpAccess decides
                          connection_limit=self.door.limits.max_connections + _WAITRESS_HEADROOM,
                          cleanup_interval=MAINTENANCE_INTERVAL_SEC,
                          # Reads on while a request is answered, so a client's hang-up is seen at once
                          # (environ["waitress.client_disconnected"]) and its slot freed.
                          channel_request_lookahead=1)
        self._adj = adj
        self._map: dict = {}
        self._dispatcher = ThreadedTaskDispatcher()
        self._dispatcher.set_thread_count(threads)
        self._listeners: list[DoorServer] = []
        try:
            for sockinfo in adj.listen:  # "*" or a list names several addresses (IPv4 and IPv6): one port
                if self._listeners and not port:
                    sockinfo = _with_port(sockinfo, self._listeners[0].effective_port)
                self._listeners.append(DoorServer(app, door=self.door, deadlines=deadlines, map=self._map,
                                                  dispatcher=self._dispatcher, adj=adj, sockinfo=sockinfo))
        except BaseException:
            close_all(self._map)
            self._dispatcher.shutdown(timeout=0.1)
            raise
        self.host = host
        self.port = int(self._listeners[0].effective_port)
        self.name = name
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("HTTP %s listening on %s:%d", self.name, self.host, self.port)
        return self

    def _run(self) -> None:
        try:
            loop(timeout=self._adj.asyncore_loop_timeout, map=self._map, use_poll=self._adj.asyncore_use_poll)
        except Exception:
            if not self._stopping:  # sockets closing under the loop at shutdown are expected
                log.exception("HTTP %s server loop failed", self.name)

    def stop(self, timeout_sec: float = 2.0) -> None:
        self._stopping = True
        self._dispatcher.shutdown(timeout=timeout_sec)
        if self._thread.is_alive():
            # Close the sockets on the loop's own thread (the map is not thread-safe); the loop then returns.
            try:
                self._listeners[0].trigger.pull_trigger(lambda: close_all(self._map))
            except OSError:
                pass  # the trigger is already closed: the loop is closing its map and on its way out
            self._thread.join(timeout=timeout_sec)
        if not self._thread.is_alive():
            close_all(self._map)  # idempotent: whatever the loop did not close
