"""Deepgram's `UtteranceEnd` (utterance_end_ms) from word timings: sent once a gap of at least
utterance_end_ms follows the last finalized word, with that word's end as `last_word_end`.

All times are the client's (seconds of the audio it sent). The gap is proven by whichever comes first:
- words (interim or final) that begin at least the gap after the last finalized word: the message goes
  out before their Results;
- the VAD's next speech onset at least the gap after it;
- the audio sent running the gap plus LAG_SEC past it with no speech onset seen since: LAG_SEC covers
  the audio still on its way through the pipeline (a live client's last piece or two), so a word said
  just inside the gap is heard before the gap is declared;
- CloseStream, when the audio sent runs the gap past it.
Words that begin within the gap cancel it: the next final's last word is the new reference. A speech
onset within the gap holds the message until that speech's final says whether it had words.
"""

from __future__ import annotations

LAG_SEC = 1.0  # audio sent but perhaps not yet through the VAD (a piece is 0.5 s)


class UtteranceEndWatch:
    def __init__(self, gap_sec: float):
        self._gap = gap_sec
        self._last: float | None = None  # the last finalized word's end, while no UtteranceEnd followed it
        self._held = False  # the VAD heard speech within the gap: its words (or their absence) decide

    def _due(self) -> float | None:
        last, self._last, self._held = self._last, None, False
        return last

    def words(self, first_start: float) -> float | None:
        """Results with words beginning at `first_start`: last_word_end to announce before them, or None."""
        last = self._last
        if last is None or first_start < last:
            return None  # nothing pending, or words of audio before the reference
        if first_start - last >= self._gap:
            return self._due()
        self._last, self._held = None, False  # speech came back within the gap
        return None

    def finalized(self, last_word_end: float) -> None:
        self._last, self._held = max(last_word_end, self._last or 0.0), False

    def no_words(self) -> None:
        """A final without words (the VAD heard noise): the gap goes on from the last word."""
        self._held = False

    def speech_started(self, at_sec: float) -> float | None:
        last = self._last
        if last is None or self._held:
            return None
        if at_sec - last >= self._gap:
            return self._due()
        self._held = True
        return None

    def audio(self, sent_sec: float) -> float | None:
        """The client has sent audio up to `sent_sec`: last_word_end if the gap is now proven."""
        return self._proven(sent_sec, self._gap + LAG_SEC)

    def closing(self, sent_sec: float) -> float | None:
        return self._proven(sent_sec, self._gap)

    def _proven(self, sent_sec: float, needed_sec: float) -> float | None:
        if self._last is None or self._held or sent_sec - self._last < needed_sec:
            return None
        return self._due()
