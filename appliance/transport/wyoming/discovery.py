"""Zeroconf announcement of the Wyoming port (`_wyoming._tcp`), which Home Assistant discovers.

Announced on the one interface that holds the announced address, so a multi-homed box is found on
the segment the operator chose, not on every network it touches. Needs the `zeroconf` package (the
`discovery` extra); imported only when `wyoming.zeroconf` is on.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def lan_address() -> str:
    """The address this host would send mDNS from: its address on the route to the multicast group
    (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((MDNS_GROUP, 5353))
        return str(probe.getsockname()[0])


class Announcement:
    """register() announces `name` at address:port; unregister() says goodbye (a draining box
    stops being offered before it stops answering)."""

    def __init__(self, name: str, address: str, port: int):
        self.name = name
        self.address = address
        self.port = port
        self._zeroconf: Any = None
        self._info: Any = None

    async def register(self) -> None:
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        ip = ipaddress.ip_address(self.address)
        self._zeroconf = AsyncZeroconf(interfaces=[self.address])
        self._info = AsyncServiceInfo(SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}", addresses=[ip.packed],
                                      port=self.port, properties={"program": "stt-appliance"})
        # zeroconf hands back a task (probing, then announcing): wait for it, so a name clash is
        # reported at start-up rather than lost in the background.
        await (await self._zeroconf.async_register_service(self._info))

    async def unregister(self) -> None:
        if self._zeroconf is None:
            return
        zeroconf, self._zeroconf = self._zeroconf, None
        try:
            await (await zeroconf.async_unregister_service(self._info))  # the goodbye is sent before closing
        finally:
            await zeroconf.async_close()
