"""Runs the Falcon app under waitress on a background thread of the appliance process."""

from __future__ import annotations

import logging
import threading

from waitress.server import create_server
from waitress.wasyncore import close_all

log = logging.getLogger(__name__)

HTTP_THREADS = 4  # health probes, scrapes, the status page and an admin load can run at once
# waitress's own cap (its default is 1 GiB): a chunked body with no Content-Length is spooled up to here
# before the app's 64 KiB limit can see it.
MAX_SPOOLED_BODY_BYTES = 1024 * 1024


class HttpServer:
    def __init__(self, app, host: str, port: int, *, threads: int = HTTP_THREADS,
                 max_body_bytes: int = MAX_SPOOLED_BODY_BYTES):
        # Binds now, so a taken port fails startup before the model loads. A body declared larger
        # than max_body_bytes is refused by waitress itself (413) before any of it is read; bodies
        # above 512 KiB are spooled to a temporary file, not held in memory.
        self._server = create_server(app, host=host, port=port, threads=threads, ident="stt-appliance",
                                     max_request_body_size=max_body_bytes,
                                     clear_untrusted_proxy_headers=False)  # X-Forwarded-For: HttpAccess decides
        self.host = host
        self.port = int(self._server.effective_port)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("HTTP listening on %s:%d", self.host, self.port)
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:
            if not self._stopping:  # sockets closing under the loop at shutdown are expected
                log.exception("HTTP server loop failed")

    def stop(self, timeout_sec: float = 2.0) -> None:
        self._stopping = True
        self._server.task_dispatcher.shutdown(timeout=timeout_sec)
        if self._thread.is_alive():
            # Close the sockets on the loop's own thread (the map is not thread-safe); run() then returns.
            try:
                self._server.trigger.pull_trigger(lambda: close_all(self._server._map))
            except OSError:
                pass  # the trigger is already closed: the loop is closing its map and on its way out
            self._thread.join(timeout=timeout_sec)
        if not self._thread.is_alive():
            close_all(self._server._map)  # idempotent: whatever the loop did not close
