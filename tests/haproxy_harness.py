"""The fleet for tests: `clients.local_fleet` (real appliances behind a real HAProxy running the
shipped configuration), skipped with a reason where haproxy is not installed."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from clients.local_fleet import HAProxyMissing, LocalFleet, haproxy_binary

FLEET_SECRET = "fleet-tests-shared-ticket-secret"


def start_fleet(request, count: int, env: Mapping[str, str] | None = None) -> LocalFleet:
    """`count` appliances behind HAProxy, stopped when `request` (a fixture's) finishes."""
    try:
        haproxy_binary()
    except HAProxyMissing as err:
        pytest.skip(str(err))
    fleet = LocalFleet(count, FLEET_SECRET, env)
    request.addfinalizer(fleet.stop)
    return fleet.start()
