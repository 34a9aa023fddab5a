"""Who may use the HTTP plane, and how much: client IP, allowlist, rate limit, tokens.

Both HTTP planes (operator and client, see transport/http/planes.py) check every request with their
own instance; addresses are read by `appliance.frontdoor.client_address`, as at every other door.
The settings come from the environment (secrets never live in YAML) and `server.http_*` keys:

- `STT_OBSERVABILITY_TOKEN`: when set, /metrics, /metrics.json, /system and a detailed /health need
  `Authorization: Bearer <token>`.
- `STT_PUBLIC_HEALTH=minimal`: /health without the token answers `{status}` (200/503) instead of 401.
- `STT_HEALTH_DETAIL_MODE=token`: details of /health only ever go to token holders, even when no
  observability token is configured (then nobody gets them).
- `STT_ADMIN_TOKEN`: enables the admin plane (`/admin/*`) for holders of this token; unset, the admin
  plane refuses everyone.
- `STT_HTTP_ALLOWLIST`: comma-separated CIDRs; other client IPs are refused.
- `server.http_trusted_proxies` (`STT_HTTP_TRUSTED_PROXIES`): X-Forwarded-For is believed only from
  these peers; the client is the right-most forwarded address that is not itself a trusted proxy.
- `server.http_rate_limit_rps` / `_burst`: per client IP, bounded state (see `KeyedRateLimiter`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from appliance.config_schema import ServerConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import AddressPolicy, client_address
from appliance.security.limiter import KeyedRateLimiter
from appliance.security.tickets import tokens_match

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


MAX_AUTHORIZATION_CHARS = 4096  # far above any token we issue; longer headers are refused unread


def parse_networks(entries: Iterable[str], *, what: str, resolve_hostnames: bool = False) -> tuple[IpNetwork, ...]:
    """CIDRs or single addresses (and, with resolve_hostnames, host names resolved once, at startup)."""
    networks: list[IpNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            if not resolve_hostnames:
                raise ValueError(f"{what}: {entry!r} is not an IP address or CIDR block") from None
        try:
            infos = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
        except OSError as err:
            raise ValueError(f"{what}: cannot resolve host name {entry!r} ({err})") from None
        networks.extend(ipaddress.ip_network(info[4][0]) for info in infos)
    return tuple(networks)


def _split(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part.strip()]


@dataclass(frozen=True)
class HttpAccessSettings:
    observability_token: str = ""
    admin_token: str = ""
    public_health_minimal: bool = False
    health_details_need_token: bool = False
    allowlist: tuple[IpNetwork, ...] = ()
    trusted_proxies: tuple[IpNetwork, ...] = ()
    rate_limit_rps: float = 0.0
    rate_limit_burst: float = 0.0

    @classmethod
    def from_config(cls, server: ServerConfig, environ: Mapping[str, str] | None = None) -> HttpAccessSettings:
        env = os.environ if environ is None else environ
        public_health = env.get("STT_PUBLIC_HEALTH", "").strip().lower()
        detail_mode = env.get("STT_HEALTH_DETAIL_MODE", "").strip().lower()
        if public_health not in ("", "minimal"):
            raise ValueError(f"STT_PUBLIC_HEALTH={public_health!r}: the only value is 'minimal'")
        if detail_mode not in ("", "token"):
            raise ValueError(f"STT_HEALTH_DETAIL_MODE={detail_mode!r}: the only value is 'token'")
        return cls(
            observability_token=env.get("STT_OBSERVABILITY_TOKEN", ""),
            admin_token=env.get("STT_ADMIN_TOKEN", ""),
            public_health_minimal=public_health == "minimal",
            health_details_need_token=detail_mode == "token",
            allowlist=parse_networks(_split(env.get("STT_HTTP_ALLOWLIST")), what="STT_HTTP_ALLOWLIST"),
            trusted_proxies=parse_networks(server.http_trusted_proxies, what="server.http_trusted_proxies",
                                           resolve_hostnames=True),
            rate_limit_rps=float(server.http_rate_limit_rps),
            rate_limit_burst=float(server.http_rate_limit_burst),
        )


class HttpAccess:
    """The checks every HTTP request goes through; the Falcon middleware only calls these."""

    def __init__(self, settings: HttpAccessSettings):
        self.settings = settings
        self._limiter = KeyedRateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
        self._allowlist = AddressPolicy(settings.allowlist, setting="STT_HTTP_ALLOWLIST")

    def client_ip(self, remote_addr: str, forwarded_for: str | None) -> str:
        """The socket peer, or, when that peer is a trusted proxy, the right-most untrusted X-Forwarded-For hop."""
        peer = client_address(remote_addr or "")
        if peer is None:
            return remote_addr or "unknown"
        if not forwarded_for or not self._trusted(peer):
            return str(peer)
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            addr = client_address(hop)
            if addr is None:
                break  # a garbled header: trust nothing further left
            if not self._trusted(addr):
                return str(addr)
        return str(peer)

    def _trusted(self, addr) -> bool:
        return any(addr in net for net in self.settings.trusted_proxies)

    def admit(self, client_ip: str) -> None:
        """ERR1005 outside the allowlist, ERR1006 over the rate limit."""
        self._allowlist.check(client_ip)
        wait_sec = self._limiter.allow(client_ip)
        if wait_sec > 0:
            raise ApplianceError("ERR1006", f"HTTP rate limit exceeded (server.http_rate_limit_rps="
                                 f"{self.settings.rate_limit_rps:g}); retry in {wait_sec:.2f} s",
                                 retry_after_sec=wait_sec)

    @property
    def tracked_clients(self) -> int:
        return len(self._limiter)

    # --- tokens -------------------------------------------------------------------------------

    @staticmethod
    def bearer(authorization: str | None) -> str | None:
        """The bearer token, or None for a missing, malformed or oversized header (then ERR1004)."""
        if not authorization or len(authorization) > MAX_AUTHORIZATION_CHARS:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def has_observability_token(self, authorization: str | None) -> bool:
        return tokens_match(self.bearer(authorization), self.settings.observability_token)

    def require_observability(self, authorization: str | None) -> None:
        """ERR1004 unless no observability token is configured or the request carries it."""
        if self.settings.observability_token and not self.has_observability_token(authorization):
            raise ApplianceError("ERR1004", "this endpoint needs Authorization: Bearer <STT_OBSERVABILITY_TOKEN>")

    def health_view(self, authorization: str | None) -> str:
        """'full' or 'minimal' for /health; ERR1004 when neither applies."""
        if self.has_observability_token(authorization):
            return "full"
        if self.settings.health_details_need_token:
            return "minimal"
        if not self.settings.observability_token:
            return "full"
        if self.settings.public_health_minimal:
            return "minimal"
        raise ApplianceError("ERR1004", "/health needs Authorization: Bearer <STT_OBSERVABILITY_TOKEN> "
                             "(or set STT_PUBLIC_HEALTH=minimal for a token-less status)")

    def require_admin(self, authorization: str | None) -> None:
        expected = self.settings.admin_token
        if not expected:
            raise ApplianceError("ERR1005", "the admin plane is disabled: set STT_ADMIN_TOKEN to enable it")
        if not tokens_match(self.bearer(authorization), expected):
            raise ApplianceError("ERR1004", "the admin plane needs Authorization: Bearer <STT_ADMIN_TOKEN>")

