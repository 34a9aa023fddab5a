"""Caps on StreamingRecognize calls that are open, whether or not they have named a session yet.

A call holds a connection, a task and a place in drain's wait from the moment it opens; until its
first chunk names a session, no other cap sees it. `OpenCalls.acquire(peer_ip)` counts it, globally
and per client IP, and refuses one past either cap with ERR1007 — so a host opening calls and never
sending a byte runs into its own per-IP cap, not the box's.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from appliance.errors import ApplianceError

RETRY_AFTER_SEC = 1.0


class OpenCalls:
    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total = max_total
        self.max_per_ip = max_per_ip  # 0: no per-IP cap
        self._per_ip: Counter[str] = Counter()
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return self._total

    def acquire(self, peer_ip: str) -> Callable[[], None]:
        """Count one open call; returns its release (call it once, when the call ends)."""
        with self._lock:
            if self._total >= self.max_total:
                raise ApplianceError("ERR1007", f"{self._total} streaming calls are open "
                                     f"(server.max_open_streams={self.max_total})", retry_after_sec=RETRY_AFTER_SEC)
            if self.max_per_ip and self._per_ip[peer_ip] >= self.max_per_ip:
                raise ApplianceError("ERR1007", "too many open streaming calls from this client IP "
                                     f"(server.max_sessions_per_ip={self.max_per_ip})",
                                     retry_after_sec=RETRY_AFTER_SEC)
            self._total += 1
            self._per_ip[peer_ip] += 1

        def release() -> None:
            with self._lock:
                self._total -= 1
                self._per_ip[peer_ip] -= 1
                if self._per_ip[peer_ip] <= 0:
                    del self._per_ip[peer_ip]
        return release
