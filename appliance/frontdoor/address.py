"""Who the client is, read the same way by every door: a normalised IP address as text.

gRPC names peers "ipv4:1.2.3.4:5678" / "ipv6:[::1]:5678" (brackets may be %-encoded); asyncio and
waitress give a bare host. An IPv4 client of a dual-stack socket ("::ffff:10.0.0.5") is its IPv4
address, and an IPv6 zone id is dropped, so allow-lists and per-address caps see one address
whichever way the port was bound.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import unquote

from appliance.errors import ApplianceError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(host: str) -> IpAddress | None:
    """A bare host ("10.0.0.5", "::ffff:10.0.0.5", "[fe80::1%eth0]") as an address; None if it is not one."""
    try:
        addr = ipaddress.ip_address(str(host).strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
    return mapped or addr


def grpc_peer_address(grpc_peer: str) -> str:
    """Client address of a gRPC `context.peer()`: "ipv4:1.2.3.4:5678" -> "1.2.3.4",
    "ipv6:[::1]:5678" -> "::1", "unix:/path" -> "unix"."""
    peer = unquote(grpc_peer or "").strip()
    scheme, sep, rest = peer.partition(":")
    if not sep:
        return peer or "unknown"
    if scheme in ("unix", "unix-abstract"):
        return "unix"
    if scheme == "ipv6" and rest.startswith("["):
        host = rest[1:rest.find("]")] if "]" in rest else rest[1:]
    elif scheme == "ipv4":
        host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest
    elif scheme == "ipv6":
        host = rest
    else:
        return peer
    addr = client_address(host)
    return str(addr) if addr is not None else (host or "unknown")


def peer_label(addr: IpAddress | None, port: int = 0) -> str:
    """"ipv4:1.2.3.4:5678" / "ipv6:[::1]:5678": how a door other than gRPC names its client to the
    session service, which reads it back with `grpc_peer_address`."""
    if addr is None:
        return "unknown"
    return f"ipv6:[{addr}]:{port}" if addr.version == 6 else f"ipv4:{addr}:{port}"


class AddressPolicy:
    """An allow-list of networks ([] allows every address); `check` refuses others with ERR1005."""

    def __init__(self, networks: Iterable[IpNetwork] = (), *, setting: str = "allow_networks"):
        self.networks = tuple(networks)
        self._setting = setting

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        addr = client_address(address)
        return addr is not None and any(addr in network for network in self.networks)

    def check(self, address: str) -> None:
        if not self.allows(address):
            raise ApplianceError("ERR1005", f"this client address is not in {self._setting}")
