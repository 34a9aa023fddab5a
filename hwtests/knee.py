"""Where a capacity sweep's knee lies, confirmed so that two runs on the same box agree.

One try of a step is a coin with a bias: at the margin a step holds one time and gives way the
next (two `--quick` runs 20 minutes apart read 32 and 20 streams). So the step that gave way is
tried again, best of three, and so is the step before it; a step holds when most of its tries did.
A step that holds on its retry was noise: the sweep goes on upward. A step below the failure that
gives way on its retry moves the knee down. When every step held, the top one is tried again.

`find_knee` decides from a `try_step(count) -> held` callable (hwtests.sweep runs the load tester
in it; the tests pass made-up outcomes); `knee_spread` reads the range single passes would have
reported from the tries seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Retries per sweep, all steps together: the failed step and the one before it best of three each
# (2 + 2), and room for one more step down. Simulated on a box whose steps near the knee hold by
# chance (tests/test_hwtests_knee.py), 4 leaves 6 % of knees unconfirmed, 6 almost none; most
# sweeps use 2 or 3 (a --quick try is ~30 s).
MAX_RETRIES = 6


def decided(tries: Sequence[bool]) -> bool:
    """Two tries agree (best of three)."""
    return tries.count(True) >= 2 or tries.count(False) >= 2


def majority_held(tries: Sequence[bool]) -> bool:
    """Most tries held; a tie (a retry budget spent) counts as not held: a knee is a promise."""
    return tries.count(True) > tries.count(False)


@dataclass
class KneeSearch:
    """The outcome: `knee` (the largest count whose tries mostly held, with every count below it
    holding too; None: not even the first), `tries` (count -> held per try, in the order run),
    `failed_at` (the count that mostly gave way; None: the top held), `confirmed` (every count that
    decides the knee got two tries that agree, within the retry budget)."""

    counts: tuple[int, ...]
    tries: dict[int, list[bool]] = field(default_factory=dict)
    knee: int | None = None
    failed_at: int | None = None
    confirmed: bool = True
    retries: int = 0


def find_knee(counts: Sequence[int], try_step: Callable[[int], bool], max_retries: int = MAX_RETRIES) -> KneeSearch:
    search = KneeSearch(tuple(counts))

    def run(count: int) -> bool:
        held = try_step(count)
        search.tries.setdefault(count, []).append(held)
        return held

    def settle(count: int) -> bool:
        tries = search.tries[count]
        while not decided(tries) and search.retries < max_retries:
            search.retries += 1
            run(count)
        if not decided(tries):
            search.confirmed = False
        return majority_held(tries)

    index = 0
    while index < len(counts):  # upward: one try a step; a failure is retried before it counts
        if run(counts[index]) or settle(counts[index]):
            index += 1
        else:
            search.failed_at = counts[index]
            break
    if index == len(counts):  # every step held once: is the top one real?
        if settle(counts[-1]):
            search.knee = counts[-1]
            return search
        index = len(counts) - 1
        search.failed_at = counts[index]
    below = index - 1
    while below >= 0 and not settle(counts[below]):  # the step before the failure must hold again
        search.failed_at = counts[below]
        below -= 1
    search.knee = counts[below] if below >= 0 else None
    return search


def knee_spread(counts: Sequence[int], tries: dict[int, list[bool]]) -> tuple[int | None, int | None]:
    """(low, high): the knee the unluckiest and the luckiest single pass through these tries would
    have read: the last count of the unbroken run of counts that held on every try / on some try."""
    low = high = None
    every_try_so_far = True
    for count in counts:
        held = tries.get(count)
        if not held or not any(held):
            break
        high = count
        every_try_so_far = every_try_so_far and all(held)
        if every_try_so_far:
            low = count
    return low, high


def steps_apart(counts: Sequence[int], low: int | None, high: int | None) -> int:
    """How many steps of the sweep lie between two knees (None: below the first step)."""
    position: dict[int | None, int] = {None: -1, **{c: i for i, c in enumerate(counts)}}
    return abs(position[high] - position[low])
