"""Is a decode from a shortened encoder window trustworthy, or must it be redone on a larger one?

Whisper was trained on 30 s windows. Cut to 10-15 s it is 2-3x cheaper and usually agrees word for
word, but on some short commands it fails in two recognisable ways (measured on ../shared/audio,
bench/wer.py): it loops ("10 of clubs 10 of clubs 10", "1. 2 3 3") because it never sees the
silence that tells it the speech ended, or it returns nothing. Both show in the tokens, so the
bucketed path checks each result and re-decodes only the suspects on the next window up, then the
full one: speed of the short window, accuracy of the long one. A false alarm costs one extra
decode, never accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# A span of this many tokens or fewer repeated back to back counts as a loop. Real speech repeats
# words too ("no no"); those only pay for a decode on a larger window.
MAX_LOOP_SPAN = 8


def window_suspect(tokens: Sequence[int], *, token_budget: int, is_word: Callable[[int], bool]) -> str | None:
    """Why a short-window decode should be redone on a larger window, or None.

    `tokens` are the text tokens of the result (no special or timestamp tokens); `is_word(t)` says
    whether a token spells letters or digits (a repeated "." is not a loop)."""
    if not tokens:
        return "empty"
    if len(tokens) >= token_budget:
        return "token budget reached"
    n = len(tokens)
    for span in range(1, min(MAX_LOOP_SPAN, n // 2) + 1):
        for start in range(n - 2 * span + 1):
            first = tokens[start:start + span]
            if first == tokens[start + span:start + 2 * span] and any(is_word(t) for t in first):
                return "repeated span"
    return None
