"""The queue heads waiting for a model slot, and the order the dispatcher takes them in.

A stream's head becomes eligible once its previous decode is done. Heads are numbered in the order
they became eligible, so a stream that was just served goes behind the others (round-robin); finals
go first, then speculative partials (the final's own audio, decoded as silence began), then
partials. An eligible final carries its deadline (`queue_timeout_sec`): the scheduler fails it with
ERR1009 if no slot takes it in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from appliance.scheduler.stream_queue import DecodeRequest


class EligibleHeads:
    def __init__(self) -> None:
        self._heads: dict[DecodeRequest, None] = {}  # insertion-ordered: batching takes the oldest first
        self._sequence = 0
        self.finals = 0  # eligible finals among them
        self.partials = 0  # eligible ordinary (not speculative) partials among them

    def __len__(self) -> int:
        return len(self._heads)

    def __contains__(self, request: DecodeRequest) -> bool:
        return request in self._heads

    def add(self, head: DecodeRequest, timeout_sec: float, on_timeout: Callable[[DecodeRequest], None]) -> None:
        """`head` may run now; a final not taken within `timeout_sec` (0: no limit) goes to `on_timeout`."""
        self._sequence += 1
        head.sequence = self._sequence
        self._heads[head] = None
        self.finals += head.is_final
        self.partials += head.ordinary_partial
        if head.is_final and timeout_sec > 0:
            head.deadline = asyncio.get_running_loop().call_later(timeout_sec, on_timeout, head)

    def remove(self, request: DecodeRequest) -> bool:
        """Take `request` out (dispatched, dropped or expired) and cancel its deadline; False when
        it was not eligible."""
        present = request in self._heads
        if present:
            del self._heads[request]
            self.finals -= request.is_final
            self.partials -= request.ordinary_partial
        if request.deadline is not None:
            request.deadline.cancel()
            request.deadline = None
        return present

    def next(self) -> DecodeRequest | None:
        """Finals first, then speculative partials, then partials; within each, the one eligible
        longest (round-robin across streams)."""
        if not self._heads:
            return None
        return min(self._heads, key=lambda r: (r.rank, r.sequence))

    def compatible(self, key: tuple, limit: int) -> list[DecodeRequest]:
        """Up to `limit` heads that can share one backend call with a batch of `key`, first in line first."""
        return sorted((r for r in self._heads if r.batch_key() == key), key=lambda r: (r.rank, r.sequence))[:limit]

    def count_compatible(self, key: tuple) -> int:
        return sum(r.batch_key() == key for r in self._heads)
