"""The committed/unstable split of partial results (LocalAgreement-2), and text guards.

Two consecutive hypotheses of one utterance agree on a word-level prefix; that prefix becomes
committed and never shrinks or changes for the rest of the utterance. The final may revise only
the unstable tail.
"""

from __future__ import annotations

import re

_WORD_KEY = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    """Compare words without case or punctuation, so 'Hello,' and 'hello' agree."""
    return _WORD_KEY.sub("", word.lower())


def common_prefix_len(a: list[str], b: list[str]) -> int:
    n = 0
    for left, right in zip(a, b, strict=False):
        if _key(left) != _key(right):
            break
        n += 1
    return n


class CommitPolicy:
    """One utterance's committed words and the previous hypothesis."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] | None = None

    def partial(self, hypothesis: str) -> tuple[str, str]:
        """Fold in a partial hypothesis; return (committed_text, unstable_text)."""
        words = hypothesis.split()
        tail = self._after_committed(words)
        if self._previous is not None:
            agreed = common_prefix_len(self._after_committed(self._previous), tail)
            self.committed.extend(tail[:agreed])
        self._previous = words
        return " ".join(self.committed), " ".join(self._after_committed(words))

    def final(self, hypothesis: str) -> str:
        """The final text: the committed words, then whatever the final hypothesis says after them."""
        text = " ".join(self.committed + self._after_committed(hypothesis.split()))
        return text

    def _after_committed(self, words: list[str]) -> list[str]:
        """Words of a hypothesis that follow the committed prefix.

        A hypothesis that no longer starts with the committed words (the model changed its mind)
        still has a prefix taken to cover them: committed text is a promise to the client, so it
        wins. That prefix is where the committed words align best, so a word the new hypothesis
        inserts or leaves out inside the committed part is neither repeated nor loses the word after
        it; with nothing to align on, it is the first len(committed) words.
        """
        return words[committed_prefix_end(self.committed, words):]


def committed_prefix_end(committed: list[str], words: list[str]) -> int:
    """How many leading `words` the `committed` words cover: the prefix with the fewest word edits
    against them; among equals, one that ends on a matching word, then the one nearest in length."""
    n = len(committed)
    if common_prefix_len(committed, words) == n:
        return n  # the usual case: the hypothesis repeats the committed words
    a, b = [_key(w) for w in committed], [_key(w) for w in words]
    row = list(range(len(b) + 1))  # edits between committed[:0] and words[:j]
    for i in range(1, n + 1):
        previous, row = row, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
    # row[j]: edits between all committed words and words[:j]
    return min(range(len(b) + 1), key=lambda j: (row[j], not (j and b[j - 1] == a[-1]), abs(j - n))) if n else 0


def collapse_repeats(text: str, max_repeats: int = 2, max_ngram: int = 4) -> str:
    """Cut repetition loops ('the the the the', 'thank you. thank you. thank you.') to `max_repeats`.

    Whisper falls into these on noise and at the end of audio; a real speaker rarely says the same
    n-gram more than twice in a row.
    """
    words = text.split()
    changed = True
    while changed:
        changed = False
        for n in range(1, max_ngram + 1):
            i = 0
            out: list[str] = []
            while i < len(words):
                gram = [_key(w) for w in words[i:i + n]]
                if len(gram) < n or not any(gram):
                    out.append(words[i])
                    i += 1
                    continue
                repeats = 1
                while [_key(w) for w in words[i + repeats * n:i + (repeats + 1) * n]] == gram:
                    repeats += 1
                if repeats > max_repeats:
                    out.extend(words[i:i + max_repeats * n])
                    i += repeats * n
                    changed = True
                else:
                    out.append(words[i])
                    i += 1
            words = out
    return " ".join(words)


def strip_overlap(previous_text: str, text: str, max_words: int = 8) -> str:
    """Drop the words at the start of `text` that repeat the end of `previous_text`.

    Used when an utterance is cut at the buffer cap and the next piece starts with
    `buffer_overlap_sec` of the audio the previous final already covered.
    """
    prev = previous_text.split()
    words = text.split()
    for k in range(min(max_words, len(prev), len(words)), 0, -1):
        if common_prefix_len(prev[-k:], words[:k]) == k:
            return " ".join(words[k:])
    return text


def repeats_prompt(prompt: str, text: str, run_words: int = 4) -> bool:
    """Whether `text` recites `prompt`, as Whisper may instead of transcribing: they share a run of
    `run_words` consecutive words, or a shorter text is a run of the prompt's words as a whole."""
    said = [k for k in map(_key, prompt.split()) if k]
    heard = [k for k in map(_key, text.split()) if k]
    if not said or not heard:
        return False
    n = min(run_words, len(heard))
    runs = {tuple(said[i:i + n]) for i in range(len(said) - n + 1)}
    return any(tuple(heard[i:i + n]) in runs for i in range(len(heard) - n + 1))
