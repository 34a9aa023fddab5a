"""Security: token buckets, bounded keyed limiters, CreateSession auth profiles, admission caps,
audio byte budgets and gRPC peer parsing. Real components, injected clocks."""

from __future__ import annotations

import dataclasses
import tracemalloc

import pytest

from appliance.config import AuthConfig, ServerConfig
from appliance.errors import ApplianceError
from appliance.frontdoor import grpc_peer_address
from appliance.security import (
    Admission,
    AudioRateLimiter,
    Authenticator,
    KeyedRateLimiter,
    TokenBucket,
    auth_metadata,
    hash_api_key,
    sign,
)

SECRET = "s3cret"
T0 = 1_700_000_000.0


def refused(code: str, fn, *args, **kwargs) -> ApplianceError:
    with pytest.raises(ApplianceError) as info:
        fn(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


# --- limiter -------------------------------------------------------------------------------------

def test_token_bucket_burst_then_refill():
    bucket = TokenBucket(rate_per_sec=2.0, capacity=4.0, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1, 0.0) == pytest.approx(0.5)
    assert bucket.take(1, 0.5) == 0.0
    assert bucket.take(1, 0.5) == pytest.approx(0.5)
    assert bucket.take(1, 100.0) == 0.0
    assert bucket.tokens == pytest.approx(3.0)  # refill capped at capacity


def test_token_bucket_oversized_cost_passes_when_full_then_pays_debt():
    bucket = TokenBucket(rate_per_sec=10.0, capacity=10.0, now=0.0)
    assert bucket.take(25, 0.0) == 0.0
    assert bucket.take(1, 0.0) == pytest.approx(1.6)  # 15 tokens of debt plus 1


def test_keyed_limiter_is_per_key_and_rate_zero_disables():
    limiter = KeyedRateLimiter(1.0, 2.0)
    assert limiter.allow("a", now=0.0) == limiter.allow("a", now=0.0) == 0.0
    assert limiter.allow("a", now=0.0) == pytest.approx(1.0)
    assert limiter.allow("b", now=0.0) == 0.0
    off = KeyedRateLimiter(0.0, 5.0)
    assert all(off.allow("x", now=0.0) == 0.0 for _ in range(100)) and len(off) == 0


def test_keyed_limiter_burst_zero_equals_rate():
    limiter = KeyedRateLimiter(3.0, 0.0)
    assert [limiter.allow("k", now=0.0) for _ in range(3)] == [0.0] * 3
    assert limiter.allow("k", now=0.0) > 0


def test_keyed_limiter_lru_bounds_50k_keys_and_memory():
    limiter = KeyedRateLimiter(10.0, 10.0, max_keys=1000, idle_ttl_sec=3600.0)
    tracemalloc.start()
    try:
        base_bytes, _ = tracemalloc.get_traced_memory()
        for i in range(50_000):
            limiter.allow(f"client-{i}", now=float(i) * 1e-3)
            assert len(limiter._buckets) <= 1000
        used_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limiter._buckets) == 1000
    assert used_bytes - base_bytes < 1_000_000  # ~1000 buckets, not 50k
    assert "client-49999" in limiter._buckets and "client-0" not in limiter._buckets


def test_keyed_limiter_default_max_keys_bound():
    limiter = KeyedRateLimiter(5.0, 5.0, idle_ttl_sec=3600.0)
    for i in range(50_000):
        limiter.allow(i, now=0.0)
    assert len(limiter._buckets) == limiter.max_keys == 10_000


def test_keyed_limiter_ttl_prunes_idle_keys_within_1000_calls():
    limiter = KeyedRateLimiter(1.0, 1.0, idle_ttl_sec=10.0, prune_interval_sec=1e9)
    for i in range(500):
        limiter.allow(f"old-{i}", now=0.0)
    for _ in range(600):  # the 1000th call sweeps; old keys have been idle 20 s > 10 s
        limiter.allow("fresh", now=20.0)
    assert len(limiter) == 1
    assert limiter.prune(now=1000.0) == 1 and len(limiter) == 0


def test_keyed_limiter_time_based_prune():
    limiter = KeyedRateLimiter(1.0, 1.0, idle_ttl_sec=10.0)
    for i in range(50):
        limiter.allow(f"k{i}", now=0.0)
    limiter.allow("late", now=30.0)  # prune_interval_sec defaults to the TTL
    assert len(limiter) == 1


# --- auth ----------------------------------------------------------------------------------------

def auth(**kwargs) -> AuthConfig:
    return AuthConfig(**kwargs)


def signed(ttl_sec: float = 60.0) -> Authenticator:
    return Authenticator(auth(create_session_auth_profile="signed_token", create_session_auth_secret=SECRET,
                              create_session_auth_ttl_sec=ttl_sec))


def test_profile_none_accepts_anonymous_and_any_key():
    a = Authenticator(auth())
    assert a.authenticate({}, {}, T0) is None
    assert a.authenticate({}, {"api_key": "k1"}, T0) == "k1"


@pytest.mark.parametrize("config, attrs", [
    (dict(require_api_key=True), {}),
    (dict(), {"api_key_required": "true"}),
    (dict(create_session_auth_profile="api_key"), {}),
    (dict(create_session_auth_profile="api_key"), {"api_key": ""}),
])
def test_missing_api_key_is_refused(config, attrs):
    err = refused("ERR1004", Authenticator(auth(**config)).authenticate, {}, attrs, T0)
    assert "missing api_key" in err.message


def test_api_key_shape_and_allowed_list():
    a = Authenticator(auth(create_session_auth_profile="api_key"), allowed_api_keys={hash_api_key("good")})
    assert a.authenticate({}, {"api_key": "good"}, T0) == "good"
    assert "unknown api_key" in refused("ERR1004", a.authenticate, {}, {"api_key": "bad"}, T0).message
    assert "malformed api_key" in refused("ERR1004", a.authenticate, {}, {"api_key": "has space"}, T0).message
    assert "malformed" in refused("ERR1004", a.authenticate, {}, {"api_key": "x" * 300}, T0).message


def test_signed_token_both_metadata_forms():
    a = signed()
    sig = sign(SECRET, 1700000000)
    assert a.authenticate({"authorization": f"Bearer {sig}", "x-stt-auth-ts": "1700000000"}, {}, T0) is None
    ts = "1700000001"
    assert a.authenticate({"authorization": f"Bearer {ts}:{sign(SECRET, ts)}"}, {}, T0) is None
    assert a.authenticate(dict(auth_metadata(SECRET, now=T0 + 2)), {}, T0) is None


def test_signed_token_refusals():
    a = signed(ttl_sec=60.0)
    good = {"authorization": f"Bearer {sign(SECRET, 1700000000)}", "x-stt-auth-ts": "1700000000"}
    cases = {
        "missing authorization": {},
        "missing x-stt-auth-ts": {"authorization": good["authorization"]},
        "malformed authorization": {"authorization": "Basic abc"},
        "malformed auth ts": {"authorization": f"Bearer soon:{'0' * 64}"},
        "malformed signature": {"authorization": "Bearer 1700000000:zz"},
        "bad signature": {"authorization": f"Bearer 1700000000:{sign('other', 1700000000)}"},
        "expired": {"authorization": f"Bearer 1699999000:{sign(SECRET, 1699999000)}"},
        "in the future": {"authorization": f"Bearer 1700001000:{sign(SECRET, 1700001000)}"},
    }
    for words, metadata in cases.items():
        assert words in refused("ERR1004", a.authenticate, metadata, {}, T0).message
    assert a.authenticate(good, {}, T0) is None
    assert "replayed" in refused("ERR1004", a.authenticate, good, {}, T0 + 1).message


def test_signed_token_binds_api_key():
    a = signed()
    md = dict(auth_metadata(SECRET, api_key="alice", now=T0))
    assert "bad signature" in refused("ERR1004", a.authenticate, md, {"api_key": "mallory"}, T0).message
    assert "bad signature" in refused("ERR1004", a.authenticate, md, {}, T0).message
    assert a.authenticate(md, {"api_key": "alice"}, T0) == "alice"
    unbound = dict(auth_metadata(SECRET, now=T0 + 0.5))
    assert "bad signature" in refused("ERR1004", a.authenticate, unbound, {"api_key": "alice"}, T0).message


def test_signed_token_ttl_zero_disables_expiry_but_replay_memory_is_bounded():
    a = Authenticator(auth(create_session_auth_profile="signed_token", create_session_auth_secret=SECRET,
                           create_session_auth_ttl_sec=0.0), replay_max_entries=100)
    old = dict(auth_metadata(SECRET, now=1000.0))
    assert a.authenticate(old, {}, T0) is None
    assert "replayed" in refused("ERR1004", a.authenticate, old, {}, T0).message
    for i in range(1000):
        a.authenticate(dict(auth_metadata(SECRET, now=T0 + i)), {}, T0)
    assert len(a._replays) <= 100


def test_with_a_ttl_the_replay_memory_never_forgets_an_unexpired_signature():
    a = Authenticator(auth(create_session_auth_profile="signed_token", create_session_auth_secret=SECRET,
                           create_session_auth_ttl_sec=60.0), replay_max_entries=10)
    used = [dict(auth_metadata(SECRET, now=T0 + i / 100)) for i in range(10)]
    for metadata in used:
        a.authenticate(metadata, {}, T0)
    full = refused("ERR1006", a.authenticate, dict(auth_metadata(SECRET, now=T0 + 0.5)), {}, T0 + 1)
    assert full.retry_after_sec and full.retry_after_sec <= 60
    assert "replayed" in refused("ERR1004", a.authenticate, used[0], {}, T0 + 1).message  # not evicted
    # once the first signatures expire, there is room again
    assert a.authenticate(dict(auth_metadata(SECRET, now=T0 + 61)), {}, T0 + 61) is None


def test_the_default_signed_token_ttl_is_positive():
    assert auth().create_session_auth_ttl_sec > 0


def test_signed_token_requires_secret():
    with pytest.raises(ValueError, match="create_session_auth_secret"):
        Authenticator(auth(create_session_auth_profile="signed_token"))


# --- admission -----------------------------------------------------------------------------------

def server(**kwargs) -> ServerConfig:
    return dataclasses.replace(ServerConfig(), **kwargs)


def test_admission_hands_out_slots_and_leaves_the_caps_to_the_session_table():
    """The concurrent session caps are counted from live sessions (tests/test_session_table.py)."""
    adm = Admission(server(max_sessions_per_ip=2, max_sessions_per_api_key=1), AuthConfig())
    slots = [adm.admit("10.0.0.1", {}, {}, T0) for _ in range(3)]
    assert {s.identity for s in slots} == {"ip:10.0.0.1"} and slots[0].api_key is None
    keyed = adm.admit("10.0.0.3", {}, {"api_key": "k"}, T0)
    assert (keyed.identity, keyed.peer_ip, keyed.api_key) == ("key:k", "10.0.0.3", "k")
    adopted = adm.adopt("10.0.0.4", "creator-hash", "batch")  # a session ticket stands for auth and rate
    assert (adopted.identity, adopted.api_key, adopted.upload_mode) == ("ticket:creator-hash", None, "batch")


def test_caps_zero_disable():
    adm = Admission(server(max_sessions_per_ip=0, max_sessions_per_api_key=0, create_session_rps=0),
                    AuthConfig())
    for _ in range(500):
        adm.admit("10.0.0.1", {}, {"api_key": "k"}, T0)


def test_create_session_rps_is_per_identity_and_per_client_ip():
    adm = Admission(server(create_session_rps=1.0, create_session_burst=2.0), AuthConfig())
    for _ in range(2):
        adm.admit("10.0.0.1", {}, {}, T0)
    err = refused("ERR1006", adm.admit, "10.0.0.1", {}, {}, T0)
    assert err.retry_after_sec == pytest.approx(1.0) and "create_session_rps=1" in err.message
    # a key has its own bucket, but the client IP's applies beside it: a fresh key buys nothing
    assert "client IP" in refused("ERR1006", adm.admit, "10.0.0.1", {}, {"api_key": "k"}, T0).message
    adm.admit("10.0.0.2", {}, {"api_key": "k2"}, T0)  # the same key from another address is not affected
    adm.admit("10.0.0.1", {}, {}, T0 + 1.0)


def test_admission_authenticates_first():
    adm = Admission(server(), AuthConfig(require_api_key=True))
    refused("ERR1004", adm.admit, "10.0.0.1", {}, {}, T0)


def test_audio_rate_limit_and_batch_override():
    cfg = server(max_audio_bytes_per_sec=32000, max_audio_bytes_per_sec_burst=64000)
    audio = AudioRateLimiter(cfg)
    check = audio.for_session("ip:1.2.3.4", "realtime")
    check(64000, now=0.0)
    err = refused("ERR1006", check, 3200, now=0.0)
    assert err.retry_after_sec == pytest.approx(0.1) and "max_audio_bytes_per_sec=32000" in err.message
    check(3200, now=0.1)
    batch = audio.for_session("ip:1.2.3.4", "batch")  # its own budget: 1 MB/s with a 16 MB burst
    for _ in range(16):
        batch(1_000_000, now=0.0)
    assert refused("ERR1006", batch, 1_000_000, now=0.0).retry_after_sec == pytest.approx(1.0)
    unlimited = AudioRateLimiter(server(max_audio_bytes_per_sec_batch=0)).for_session("ip:1.2.3.4", "batch")
    for _ in range(100):
        unlimited(1_000_000, now=0.0)  # 0 disables


def test_audio_rate_override_semantics():
    cfg = server(max_audio_bytes_per_sec=1000, max_audio_bytes_per_sec_burst=2000,
                 max_audio_bytes_per_sec_batch=None, max_audio_bytes_per_sec_burst_batch=None,
                 max_audio_bytes_per_sec_realtime=500, max_audio_bytes_per_sec_burst_realtime=0)
    audio = AudioRateLimiter(cfg)
    assert audio.limits_bytes_per_sec == {"realtime": (500, 0), "batch": (1000, 2000)}
    realtime = audio.for_session("key:k", "realtime")
    realtime(500, now=0.0)  # burst 0 equals the rate
    refused("ERR1006", realtime, 1, now=0.0)
    batch = audio.for_session("key:k", "batch")
    batch(2000, now=0.0)
    refused("ERR1006", batch, 1, now=0.0)


def test_admission_audio_budget_follows_upload_mode():
    adm = Admission(server(max_audio_bytes_per_sec=100, max_audio_bytes_per_sec_burst=100), AuthConfig())
    batch_ticket = adm.admit("10.0.0.1", {}, {"upload_mode": "batch"}, T0)
    realtime_ticket = adm.admit("10.0.0.1", {}, {}, T0)
    adm.audio_budget(batch_ticket)(10_000, now=0.0)
    budget = adm.audio_budget(realtime_ticket)
    budget(100, now=0.0)
    refused("ERR1006", budget, 50, now=0.0)


@pytest.mark.parametrize("peer, ip", [
    ("ipv4:1.2.3.4:5678", "1.2.3.4"),
    ("ipv6:[::1]:5678", "::1"),
    ("ipv6:%5B::1%5D:5678", "::1"),
    ("ipv6:[::ffff:10.0.0.7]:1", "10.0.0.7"),
    ("ipv6:[fe80::1%25eth0]:443", "fe80::1"),
    ("unix:/tmp/stt.sock", "unix"),
    ("unix:", "unix"),
    ("", "unknown"),
])
def test_peer_ip(peer, ip):
    assert grpc_peer_address(peer) == ip
