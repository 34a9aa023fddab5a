"""Is a decode from a shortened encoder window trustworthy, or must it be redone on a larger one?

Whisper was trained on 30 s windows. Cut to 10-15 s it is 2-3x cheaper and usually agrees word for
word, but on some short commands it fails in two recognisable ways (measured on ../shared/audio,
bench/wer.py): it loops ("10 of clubs 10 of clubs 10", "1. 2 3 3") because it never sees the
silence that tells it the speech ended, or it returns nothing. Rarely it says a whole sentence
twice ("This is a very common type of bow, ... This is a very common type of bow, ...": once in
7,248 finals of the noisy dev set; the same piece cut 0.1 s later came back right). All of these
show in the tokens, so the bucketed path checks each result and re-decodes only the suspects on
the next window up, then the full one: speed of the short window, accuracy of the long one. A
false alarm costs one extra decode, never accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# A final whose confidence (exp of its mean token log-probability) is under this gets a second look.
# Chosen on the whole dev set, 7 conditions, tiny.en float32 (bench/wer.py, docs/accuracy.md): lines
# from 0.62 to 0.72 (replayed from a bucketed and a full-window run) all brought white 5 dB level with
# offline, clean speech still ahead of it; run for real, 0.7 also brought babble 10 dB within 0.5
# point (0.65: 0.55). It looks twice at ~12% of clean finals (commands and fragments, mostly) and
# 17-60% of noisy ones. 0: never.
SECOND_LOOK_BELOW = 0.7


def window_suspect(tokens: Sequence[int], *, token_budget: int, is_word: Callable[[int], bool]) -> str | None:
    """Why a short-window decode should be redone on a larger window, or None.

    `tokens` are the text tokens of the result (no special or timestamp tokens); `is_word(t)` says
    whether a token spells letters or digits (a repeated "." is not a loop)."""
    if not tokens:
        return "empty"
    if len(tokens) >= token_budget:
        return "token budget reached"
    if _repeated_span(np.asarray(tokens), is_word):
        return "repeated span"
    return None


def _repeated_span(tokens: np.ndarray, is_word: Callable[[int], bool]) -> bool:
    """Some span of tokens, holding a word, comes twice back to back. Real speech repeats words too
    ("no no"); those only pay for a decode on a larger window."""
    n = tokens.size
    for span in range(1, n // 2 + 1):
        same = tokens[:-span] == tokens[span:]  # same[i]: token i comes again `span` later
        if np.count_nonzero(same) < span:
            continue  # too few matches for a run of `span`
        run = 0
        for i, hit in enumerate(same.tolist()):
            run = run + 1 if hit else 0
            # tokens[i-span+1 .. i] == tokens[i+1 .. i+span]: a span said twice
            if run >= span and any(is_word(int(t)) for t in tokens[i - span + 1:i + 1]):
                return True
    return False
