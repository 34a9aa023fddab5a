"""Connection admission for one listener, and the drain gate every door shares.

`Door.admit(address)` hands out a `Slot` (release it once, or use it as a context manager) or
raises the coded refusal: ERR1015 while draining, ERR1005 outside the allow-list, ERR1007 past the
door's global cap or the client address's share of it. Thread-safe: waitress admits on its own
thread, asyncio doors on the loop. Refusals are logged through one `ThrottledLog` per door, so a
client refused in a loop costs the log a few lines a minute.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from appliance.errors import ApplianceError
from appliance.frontdoor.address import AddressPolicy
from appliance.observability.log_guard import ThrottledLog

log = logging.getLogger(__name__)
RETRY_AFTER_SEC = 1.0


class DrainGate:
    """The one switch that says whether new work is taken; `close` is for drain, and every door and
    the session service read it."""

    def __init__(self) -> None:
        self._open = True

    @property
    def accepting(self) -> bool:
        return self._open

    def close(self) -> None:
        self._open = False

    def check(self, what: str = "new sessions") -> None:
        if not self._open:
            raise ApplianceError("ERR1015", f"the server is draining and accepts no {what}; retry on another "
                                 "replica", retry_after_sec=5.0)


@dataclass(frozen=True)
class DoorLimits:
    max_connections: int
    max_per_address: int  # 0: no per-address cap (only behind a balancer that applies its own)
    setting: str  # the config section, named in refusals ("wyoming", "server", "http")
    # The keys of the two caps in that section, as refusals name them (gRPC's are server.max_open_streams
    # and server.max_sessions_per_ip).
    total_key: str = "max_connections"
    per_address_key: str = "max_connections_per_address"

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 0:
            raise ValueError(f"{self.setting}: max_connections must be >= 1 and the per-address cap >= 0")

    @property
    def per_address(self) -> int:
        """The per-address cap in force: the configured one, held below the global cap so one host
        cannot take every slot (0 stays 0: no per-address cap)."""
        if not self.max_per_address:
            return 0
        return min(self.max_per_address, max(1, self.max_connections - 1))


class Slot:
    """One admitted connection's claim on its door; `release` is idempotent."""

    def __init__(self, door: Door, address: str):
        self.door = door
        self.address = address
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.door._release(self.address)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Door:
    def __init__(self, name: str, limits: DoorLimits, drain: DrainGate,
                 policy: AddressPolicy | None = None, on_refused: Callable[[str, str], None] | None = None,
                 shared: AddressPolicy | None = None):
        self.name = name
        # Addresses that speak for many clients (trusted proxies): held to the global cap only, since a
        # per-address share would cap every client behind the proxy together.
        self._shared = shared
        self._on_refused = on_refused  # (code, door name): the error counters on /metrics
        self.limits = limits
        self.drain = drain
        self.policy = policy or AddressPolicy()
        self.refusals = ThrottledLog(logging.getLogger(f"appliance.door.{name}"))
        self._per_address: Counter[str] = Counter()
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open_connections(self) -> int:
        return self._open

    def connections_by_address(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_address)

    def admit(self, address: str, what: str = "new connections") -> Slot:
        try:
            self.drain.check(what)
            self.policy.check(address)
            self._take(address)
        except ApplianceError as err:
            self.refused(err)
            raise
        return Slot(self, address)

    def refused(self, err: ApplianceError, context: str = "connection refused") -> None:
        """Count a refusal this door made and log it (throttled per code)."""
        if self._on_refused is not None:
            self._on_refused(err.code, self.name)
        self.refusals.info(err.code, "%s %s: %s", self.name, context, err.code)

    def _take(self, address: str) -> None:
        limits = self.limits
        with self._lock:
            if self._open >= limits.max_connections:
                raise ApplianceError("ERR1007", f"{self._open} {self.name} connections are open "
                                     f"({limits.setting}.{limits.total_key}={limits.max_connections})",
                                     retry_after_sec=RETRY_AFTER_SEC)
            if limits.per_address and self._per_address[address] >= limits.per_address \
                    and not self._is_shared(address):
                raise ApplianceError("ERR1007", f"too many open {self.name} connections from this client address "
                                     f"({limits.setting}.{limits.per_address_key}={limits.per_address})",
                                     retry_after_sec=RETRY_AFTER_SEC)
            self._open += 1
            self._per_address[address] += 1

    def _is_shared(self, address: str) -> bool:
        return self._shared is not None and bool(self._shared.networks) and self._shared.allows(address)

    def _release(self, address: str) -> None:
        with self._lock:
            self._open -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]
