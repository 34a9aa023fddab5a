"""Token buckets and a bounded per-key rate limiter (CreateSession rps, audio bytes/sec).

Owns the arithmetic of rate limiting and nothing about who is limited or why: callers pass a key
(an api_key or client IP, already namespaced) and a cost (1 request, n bytes), and get back 0.0 when
allowed or the seconds to wait (what a RetryInfo carries). State is bounded: at most `max_keys`
buckets in LRU order, and buckets idle longer than `idle_ttl_sec` are pruned by a sweep that runs at
least every `prune_every_calls` allow() calls and whenever `prune_interval_sec` has passed. An
idle bucket older than its full-refill time is indistinguishable from a new one, so pruning never
changes a decision; LRU eviction under pressure can only make a limit more lenient for the evicted
key, never stricter.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["KeyedRateLimiter", "TokenBucket"]

DEFAULT_MAX_KEYS = 10_000
DEFAULT_PRUNE_EVERY_CALLS = 1000
MIN_IDLE_TTL_SEC = 60.0


def effective_burst(rate_per_sec: float, burst: float) -> float:
    """Bucket capacity: `burst`, or `rate_per_sec` when burst is 0 (the config's "0 uses rate")."""
    return float(burst) if burst > 0 else float(rate_per_sec)


class TokenBucket:
    """A token bucket holding at most `capacity` tokens, refilled at `rate_per_sec`.

    A cost above the capacity can never be met exactly; it is allowed when the bucket is full and
    leaves the bucket in debt (negative tokens), so one oversized audio chunk is not refused forever
    but still pays for itself before the next one passes.
    """

    __slots__ = ("capacity", "last_seen_at", "rate_per_sec", "tokens", "updated_at")

    def __init__(self, rate_per_sec: float, capacity: float, now: float):
        if rate_per_sec <= 0 or capacity <= 0:
            raise ValueError(f"TokenBucket needs rate_per_sec > 0 and capacity > 0, got "
                             f"{rate_per_sec!r} and {capacity!r}")
        self.rate_per_sec = float(rate_per_sec)
        self.capacity = float(capacity)
        self.tokens = self.capacity
        self.updated_at = now
        self.last_seen_at = now

    def _refill(self, now: float) -> None:
        elapsed_sec = max(0.0, now - self.updated_at)  # a clock stepping back refills nothing
        self.tokens = min(self.capacity, self.tokens + elapsed_sec * self.rate_per_sec)
        self.updated_at = max(self.updated_at, now)

    def take(self, cost: float, now: float) -> float:
        """Spend `cost` tokens: 0.0 when allowed, else the seconds until it would be (nothing spent)."""
        self._refill(now)
        self.last_seen_at = now
        needed = min(float(cost), self.capacity)
        if self.tokens >= needed:
            self.tokens -= float(cost)
            return 0.0
        return (needed - self.tokens) / self.rate_per_sec

    def full_refill_sec(self) -> float:
        return self.capacity / self.rate_per_sec


class KeyedRateLimiter:
    """One TokenBucket per key, bounded by `max_keys` (LRU) and `idle_ttl_sec` (pruned). Thread-safe.

    `rate_per_sec` 0 disables the limiter (allow() always returns 0.0 and keeps no state);
    `burst` 0 means a capacity of one second's worth (`rate_per_sec`). `idle_ttl_sec` defaults to
    the full-refill time, at least 60 s.
    """

    def __init__(self, rate_per_sec: float, burst: float = 0.0, *, max_keys: int = DEFAULT_MAX_KEYS,
                 idle_ttl_sec: float | None = None, prune_every_calls: int = DEFAULT_PRUNE_EVERY_CALLS,
                 prune_interval_sec: float | None = None):
        if rate_per_sec < 0 or burst < 0 or not math.isfinite(rate_per_sec) or not math.isfinite(burst):
            raise ValueError(f"rate_per_sec and burst must be finite and >= 0, got {rate_per_sec!r}, "
                             f"{burst!r}")
        if max_keys < 1 or prune_every_calls < 1:
            raise ValueError(f"max_keys and prune_every_calls must be >= 1, got {max_keys!r}, "
                             f"{prune_every_calls!r}")
        self.rate_per_sec = float(rate_per_sec)
        self.capacity = effective_burst(rate_per_sec, burst)
        self.max_keys = max_keys
        refill_sec = self.capacity / self.rate_per_sec if self.rate_per_sec > 0 else 0.0
        self.idle_ttl_sec = float(idle_ttl_sec) if idle_ttl_sec is not None else max(MIN_IDLE_TTL_SEC,
                                                                                       refill_sec)
        self.prune_every_calls = prune_every_calls
        self.prune_interval_sec = (float(prune_interval_sec) if prune_interval_sec is not None
                                   else self.idle_ttl_sec)
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()
        self._calls_since_prune = 0
        self._last_prune_at: float | None = None

    @property
    def enabled(self) -> bool:
        return self.rate_per_sec > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, cost: float = 1.0, now: float | None = None) -> float:
        """0.0 when `key` may spend `cost` now, else the seconds to wait before retrying."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            self._calls_since_prune += 1
            if self._last_prune_at is None:
                self._last_prune_at = now
            if (self._calls_since_prune >= self.prune_every_calls
                    or now - self._last_prune_at >= self.prune_interval_sec):
                self._prune_locked(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate_per_sec, self.capacity, now)
                self._buckets[key] = bucket
                while len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(cost, now)

    def prune(self, now: float | None = None) -> int:
        """Drop buckets idle longer than idle_ttl_sec; returns how many were dropped."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._prune_locked(now)

    def _prune_locked(self, now: float) -> int:
        self._calls_since_prune = 0
        self._last_prune_at = now
        cutoff = now - self.idle_ttl_sec
        stale = [key for key, bucket in self._buckets.items() if bucket.last_seen_at < cutoff]
        for key in stale:
            del self._buckets[key]
        return len(stale)
