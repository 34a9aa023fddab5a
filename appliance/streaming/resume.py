"""Where a dropped stream picks up: the resume point its finals and checkpoints hand the client.

A client that loses its connection re-attaches with the latest resume ticket it received and resends
its audio from the ticket's timeline offset (DESIGN.md §11). For that to lose no final and repeat
none, the offset must lie at or before every utterance whose final the client has not yet received,
and the next utterance index must be the first such utterance's. `ResumeLedger` keeps the finals a
stream has due but not yet sent; with the segmenter's own position it gives that point, read at the
moment a result goes out (a final's ticket then already counts that final as received: they travel
in one message).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.audio import MODEL_SAMPLE_RATE_HZ


@dataclass(frozen=True)
class ResumePoint:
    timeline_sec: float  # the client resends its audio from here (session timeline seconds)
    next_utterance_index: int  # the first utterance whose final the client has not received

    @property
    def timeline_sample(self) -> int:
        return round(self.timeline_sec * MODEL_SAMPLE_RATE_HZ)


START = ResumePoint(0.0, 0)


class ResumeLedger:
    def __init__(self) -> None:
        self._unsent: dict[int, float] = {}  # utterance index -> start (seconds) of each final due, not sent

    def final_due(self, utterance_index: int, start_sec: float) -> None:
        self._unsent[utterance_index] = start_sec

    def final_sent(self, utterance_index: int) -> None:
        self._unsent.pop(utterance_index, None)

    def point(self, segmenter_sample: int, segmenter_index: int) -> ResumePoint:
        """The resume point given where the segmenter stands (`Segmenter.resume_sample`, and the
        index of its open or next utterance)."""
        at_sec = segmenter_sample / MODEL_SAMPLE_RATE_HZ
        index = segmenter_index
        if self._unsent:
            at_sec = min(at_sec, *self._unsent.values())
            index = min(index, *self._unsent)
        return ResumePoint(max(0.0, at_sec), index)
