"""The front-door kit every listener admits connections through: caps (global, and per client address
below it), slots released exactly once, the shared drain gate, the allow-list, one reading of a
client's address, deadlines that chatter cannot extend, and refusal logs that stay short."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading

import pytest

from appliance.errors import ApplianceError
from appliance.frontdoor import AddressPolicy, ConnectionClock, Deadlines, Door, DoorLimits, DrainGate
from appliance.frontdoor.address import client_address, grpc_peer_address, peer_label


def refusal(call) -> ApplianceError:
    with pytest.raises(ApplianceError) as info:
        call()
    return info.value


class Ticks:
    """A clock the test moves by hand (ConnectionClock's time seam)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def door(total: int = 4, per_address: int = 2, *, networks: tuple[str, ...] = (), drain: DrainGate | None = None,
         **keys: str) -> Door:
    policy = AddressPolicy([ipaddress.ip_network(n) for n in networks], setting="test.allow_networks")
    return Door("test", DoorLimits(total, per_address, "test", **keys), drain or DrainGate(), policy)


def test_the_global_cap_refuses_the_next_connection_with_err1007_and_names_the_setting():
    d = door(total=3, per_address=0)
    slots = [d.admit(f"10.0.0.{i}") for i in range(3)]
    err = refusal(lambda: d.admit("10.0.0.9"))
    assert err.code == "ERR1007" and "test.max_connections=3" in err.message and err.retry_after_sec
    slots[0].release()
    d.admit("10.0.0.9")
    assert d.open_connections == 3


def test_one_address_is_held_to_its_share_while_another_is_admitted():
    d = door(total=4, per_address=2)
    held = [d.admit("10.0.0.1"), d.admit("10.0.0.1")]
    err = refusal(lambda: d.admit("10.0.0.1"))
    assert err.code == "ERR1007" and "test.max_connections_per_address=2" in err.message
    assert d.admit("10.0.0.2").address == "10.0.0.2"
    assert d.connections_by_address() == {"10.0.0.1": 2, "10.0.0.2": 1}
    held[0].release()
    d.admit("10.0.0.1")


def test_a_trusted_proxy_is_held_to_the_global_cap_only_and_other_hosts_to_their_share():
    proxies = AddressPolicy([ipaddress.ip_network("10.9.0.0/24")], setting="test.trusted_proxies")
    d = Door("test", DoorLimits(4, 1, "test"), DrainGate(), shared=proxies)
    behind_the_proxy = [d.admit("10.9.0.5") for _ in range(3)]  # three clients behind one balancer
    d.admit("10.0.0.1")
    assert d.connections_by_address() == {"10.9.0.5": 3, "10.0.0.1": 1}
    err = refusal(lambda: d.admit("10.9.0.5"))
    assert err.code == "ERR1007" and "test.max_connections=4" in err.message, "the global cap still holds"
    behind_the_proxy[0].release()
    err = refusal(lambda: d.admit("10.0.0.1"))
    assert err.code == "ERR1007" and "max_connections_per_address=1" in err.message, "other hosts keep their share"
    assert d.admit("10.9.0.5").address == "10.9.0.5"


def test_the_per_address_cap_is_held_below_the_global_one():
    """A configured share as large as the door (or larger) still leaves one slot for another address."""
    assert DoorLimits(64, 16, "wyoming").per_address == 16
    assert DoorLimits(4, 16, "server").per_address == 3
    assert DoorLimits(4, 4, "server").per_address == 3
    assert DoorLimits(1, 5, "server").per_address == 1
    assert DoorLimits(8, 0, "server").per_address == 0  # 0: no per-address cap (behind a balancer)
    d = door(total=3, per_address=10)
    for _ in range(2):
        d.admit("10.0.0.1")
    assert refusal(lambda: d.admit("10.0.0.1")).code == "ERR1007"
    d.admit("::1")  # the slot one host could not take


def test_caps_name_the_doors_own_config_keys():
    d = door(total=2, per_address=1, total_key="max_open_streams", per_address_key="max_sessions_per_ip")
    d.admit("10.0.0.1")
    assert "test.max_sessions_per_ip=1" in refusal(lambda: d.admit("10.0.0.1")).message
    d.admit("10.0.0.2")
    assert "test.max_open_streams=2" in refusal(lambda: d.admit("10.0.0.3")).message


@pytest.mark.parametrize("limits", [(0, 1), (5, -1)])
def test_limits_that_would_admit_nothing_or_count_backwards_are_refused(limits):
    with pytest.raises(ValueError, match="max_connections"):
        DoorLimits(*limits, "test")


def test_a_slot_released_twice_gives_back_one_place():
    d = door(total=2, per_address=0)
    slot = d.admit("10.0.0.1")
    other = d.admit("10.0.0.2")
    slot.release()
    slot.release()
    with slot:  # leaving the context releases too: still only once
        pass
    assert d.open_connections == 1 and d.connections_by_address() == {"10.0.0.2": 1}
    other.release()
    assert d.open_connections == 0 and d.connections_by_address() == {}


def test_a_slot_used_as_a_context_is_released_when_the_block_raises():
    d = door()
    with pytest.raises(RuntimeError), d.admit("10.0.0.1"):
        raise RuntimeError("the connection failed")
    assert d.open_connections == 0


def test_slots_are_counted_right_under_threads():
    d = door(total=1000, per_address=0)

    def churn() -> None:
        for _ in range(500):
            d.admit("10.0.0.1").release()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert d.open_connections == 0 and d.connections_by_address() == {}


def test_the_shared_drain_gate_closes_every_door_at_once_and_open_slots_stay():
    gate = DrainGate()
    grpc_door, wyoming_door = door(drain=gate), door(drain=gate)
    held = grpc_door.admit("10.0.0.1")
    assert gate.accepting
    gate.close()
    for d in (grpc_door, wyoming_door):
        err = refusal(lambda d=d: d.admit("10.0.0.2", "new streams"))
        assert err.code == "ERR1015" and "accepts no new streams" in err.message and err.retry_after_sec
    assert not gate.accepting and grpc_door.open_connections == 1  # what was admitted finishes
    held.release()
    assert refusal(lambda: gate.check("new sessions")).code == "ERR1015"


def test_the_allow_list_refuses_other_addresses_with_err1005_and_empty_allows_all():
    d = door(networks=("192.168.1.0/24", "::1/128"))
    d.admit("192.168.1.20")
    d.admit("::1")
    d.admit("::ffff:192.168.1.21")  # an IPv4 client of a dual-stack socket
    for outsider in ("192.168.2.1", "fe80::1", "not-an-address", ""):
        err = refusal(lambda a=outsider: d.admit(a))
        assert err.code == "ERR1005" and "test.allow_networks" in err.message
    assert AddressPolicy().allows("203.0.113.9") and AddressPolicy().allows("anything")


def test_an_ipv4_mapped_address_is_its_ipv4_address_for_caps_and_lists():
    assert client_address("::ffff:10.0.0.5") == ipaddress.ip_address("10.0.0.5")
    assert client_address("[fe80::1%eth0]") == ipaddress.ip_address("fe80::1")
    assert client_address(" 2001:db8::1 ") == ipaddress.ip_address("2001:db8::1")
    assert client_address("example.com") is None
    assert grpc_peer_address("ipv4:10.0.0.5:5678") == "10.0.0.5"
    assert grpc_peer_address("ipv6:[::ffff:10.0.0.5]:5678") == "10.0.0.5"
    assert grpc_peer_address("ipv6:%5B::1%5D:5678") == "::1"
    assert grpc_peer_address("unix:/run/stt.sock") == "unix"
    assert grpc_peer_address("") == "unknown"
    # How a non-gRPC door names its client to the session service, read back the gRPC way.
    for host in ("10.0.0.5", "::1", "::ffff:10.0.0.5"):
        assert grpc_peer_address(peer_label(client_address(host), 4321)) == str(client_address(host))
    assert peer_label(None) == "unknown"
    d = door(total=8, per_address=2)
    d.admit(str(client_address("10.0.0.5")))
    d.admit(grpc_peer_address("ipv6:[::ffff:10.0.0.5]:1"))
    assert refusal(lambda: d.admit(grpc_peer_address("ipv4:10.0.0.5:2"))).code == "ERR1007"


def test_chatter_does_not_extend_the_idle_deadline_and_progress_does():
    ticks = Ticks()
    clock = ConnectionClock(Deadlines(first_event_sec=5, idle_sec=30, setting="wyoming.idle_timeout_sec"), ticks)
    assert clock.remaining() == 5  # the first event's bound
    ticks.now += 2
    clock.first_event_done()  # a describe: the first event, from here the idle deadline applies
    assert clock.remaining() == 30
    for _ in range(5):  # describe every 5 s: answered, but the deadline stays where it was
        ticks.now += 5
        clock.first_event_done()
    assert clock.remaining() == 5
    clock.progress()  # audio
    assert clock.remaining() == 30
    ticks.now += 31
    assert clock.remaining() < 0
    err = clock.expired()
    assert err.code == "ERR1012" and "no progress within 30 s (wyoming.idle_timeout_sec)" in err.message
    assert "chatter does not keep a connection open" in err.message


def test_a_connection_that_completes_nothing_is_told_so_by_its_first_event_deadline():
    ticks = Ticks()
    clock = ConnectionClock(Deadlines(first_event_sec=2.5, idle_sec=30), ticks)
    ticks.now += 3
    err = clock.expired()
    assert err.code == "ERR1012" and err.message == "nothing complete within 2.5 s of connecting"


def test_within_waits_until_the_deadline_that_applies_and_no_longer():
    async def scenario() -> tuple[ApplianceError, float, str]:
        clock = ConnectionClock(Deadlines(first_event_sec=0.3, idle_sec=0.2))
        assert await clock.within(asyncio.sleep(0.05, result="header")) == "header"
        clock.first_event_done()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ApplianceError) as info:
            await clock.within(asyncio.sleep(5))
        took = loop.time() - started
        with pytest.raises(ApplianceError) as late:  # past the deadline: refused without waiting at all
            await clock.within(asyncio.sleep(5))
        return info.value, took, late.value.code

    err, took, late = asyncio.run(scenario())
    assert err.code == "ERR1012" and "no progress within 0.2 s" in err.message
    assert 0.15 <= took < 1.0 and late == "ERR1012"


def test_refusals_are_logged_a_bounded_number_of_times_per_code(caplog):
    d = door(total=1, per_address=0)
    d.admit("10.0.0.1")
    with caplog.at_level(logging.INFO, logger="appliance.door.test"):
        for _ in range(200):
            with pytest.raises(ApplianceError):
                d.admit("10.0.0.2")
        for _ in range(200):
            d.refused(ApplianceError("ERR1010", "malformed"), "event refused")
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.door.test"]
    assert sum("ERR1007" in line for line in lines) == 20 and sum("ERR1010" in line for line in lines) == 20
    assert lines[0] == "test connection refused: ERR1007"
    assert all(len(line) < 120 for line in lines)  # codes only: nothing the client sent
