"""A loopback TCP proxy that can drop its connections: the Wi-Fi between a kiosk and the appliance.

`CuttableProxy(target)` listens on 127.0.0.1 (an ephemeral port) and pipes each connection to
`target` ("host:port"). `cut()` closes every open connection at once (both sides see the socket
close, as when an access point drops a client); `refuse(sec)` then turns new connections away for a
while (the link is still down); `retarget()` sends new connections elsewhere (the kiosk comes back
through another route, or the balancer picks another node). Every loop is bounded by the sockets
closing; `close()` stops it all.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time


class CuttableProxy:
    def __init__(self, target: str):
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refuse_until = 0.0
        self._closed = threading.Event()
        self.connections = 0  # accepted and piped, over the proxy's life
        self.cuts = 0
        self.errors: list[str] = []  # what went wrong inside the proxy, for a failing test to show
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-cut-accept", daemon=True)
        self._acceptor.start()

    def retarget(self, target: str) -> None:
        with self._lock:
            self._target = target

    def cut(self) -> int:
        """Close every open connection; returns how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += 1
        for pair in pairs:
            for sock in pair:
                _close(sock)
        return len(pairs)

    def refuse(self, seconds: float) -> None:
        """Turn new connections away (accept, then close at once) for `seconds`."""
        with self._lock:
            self._refuse_until = time.monotonic() + seconds

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._acceptor.join(timeout=2)
        _close(self._listener)

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as err:
                # A transient accept failure (EMFILE on a crowded test box, a reset before accept) must
                # not stop the proxy: later connections would sit unanswered in the backlog, and a
                # resuming client would time out waiting for the server's first frame.
                if self._closed.is_set():
                    return
                self.errors.append(f"accept: {err!r}")
                time.sleep(0.05)
                continue
            with self._lock:
                refused = time.monotonic() < self._refuse_until
                target = self._target
            if refused:
                _close(client)
                continue
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=2)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pipe_then_close, args=(client, upstream), name="tcp-cut-pipe",
                             daemon=True).start()

    def _pipe_then_close(self, a: socket.socket, b: socket.socket) -> None:
        try:
            _pipe(a, b)
        except (OSError, ValueError) as err:
            # Setting up failed: `cut` closed the pair first (EBADF), or no selector could be made
            # (EMFILE). Either way both ends close, so the client sees a drop rather than a hang.
            if not self._closed.is_set():
                self.errors.append(f"pipe: {err!r}")
        finally:
            _close(a)
            _close(b)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes (or `cut` closes them)."""
    peer = {a: b, b: a}
    for sock in (a, b):
        sock.settimeout(5.0)  # readable before recv; sendall may wait for a slow reader
    with selectors.DefaultSelector() as selector:
        for sock in (a, b):
            selector.register(sock, selectors.EVENT_READ)
        while True:
            try:
                events = selector.select(timeout=1.0)
            except (OSError, ValueError):
                break
            if any(sock.fileno() < 0 for sock in (a, b)):
                break
            try:
                for key, _ in events:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        raise ConnectionResetError
                    peer[key.fileobj].sendall(data)  # type: ignore[index]
            except (OSError, ValueError):
                break


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
