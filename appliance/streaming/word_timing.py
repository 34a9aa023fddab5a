"""Word timings of a final: one per word of the final's text, in the session's timeline.

The backend aligns the words it decoded, but the final's text is not always exactly those words:
repetition loops are collapsed, words an overlap repeats are stripped, and committed words win over
a final that changed its mind (streaming/commit.py). So the text's words are matched to the decoded
ones (case and punctuation aside); a word with no match gets the time between its neighbours and
the lower of their probabilities, so every word of the text has a timing, in order. A final whose
decode kept no words (the quality filter dropped it, its text is all committed partial words) has
its words spread evenly over its audio, probability 0: an estimate, marked as one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.models.backends.base import WordTiming

_NOT_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True)
class Word:
    word: str
    start_sec: float
    end_sec: float
    probability: float


def align_words(text: str, decoded: Sequence[WordTiming], *, offset_sec: float, end_sec: float) -> tuple[Word, ...]:
    """`text`'s words with times from `decoded` (seconds from `offset_sec`), kept within
    [offset_sec, end_sec] and in order; spread evenly, probability 0, when nothing was aligned."""
    tokens = text.split()
    decoded = [w for w in decoded if w.text.strip()]
    if not tokens:
        return ()
    if not decoded:
        step = max(0.0, end_sec - offset_sec) / len(tokens)
        decoded = [WordTiming(t, i * step, (i + 1) * step, 0.0) for i, t in enumerate(tokens)]
    matched: list[WordTiming | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(None, [_norm(t) for t in tokens], [_norm(w.text) for w in decoded],
                                      autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            matched[a + k] = decoded[b + k]
    words: list[Word] = []
    for i, token in enumerate(tokens):
        timing = matched[i] or _between(matched, i, decoded)
        words.append(Word(token, offset_sec + timing.start_sec, offset_sec + timing.end_sec, timing.probability))
    return _monotonic(words, offset_sec, end_sec)


def _norm(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


def _between(matched: list[WordTiming | None], i: int, decoded: Sequence[WordTiming]) -> WordTiming:
    """A share of the gap between the nearest matched neighbours for the unmatched word at `i`."""
    before = next((j for j in range(i - 1, -1, -1) if matched[j] is not None), None)
    after = next((j for j in range(i + 1, len(matched)) if matched[j] is not None), None)
    previous, following = (matched[before] if before is not None else None), (
        matched[after] if after is not None else None)
    gap_start = previous.end_sec if previous else decoded[0].start_sec
    gap_end = following.start_sec if following else decoded[-1].end_sec
    first = before + 1 if before is not None else 0
    count = (after if after is not None else len(matched)) - first
    step = max(0.0, gap_end - gap_start) / count
    start = gap_start + (i - first) * step
    probabilities = [w.probability for w in (previous, following) if w is not None]
    return WordTiming("", start, start + step, min(probabilities) if probabilities else 0.0)


def _monotonic(words: list[Word], low: float, high: float) -> tuple[Word, ...]:
    out = []
    floor = low
    for w in words:
        start = min(max(w.start_sec, floor), high)
        end = min(max(w.end_sec, start), high)
        out.append(Word(w.word, round(start, 3), round(end, 3), round(min(max(w.probability, 0.0), 1.0), 4)))
        floor = start
    return tuple(out)
