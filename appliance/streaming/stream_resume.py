"""What a stream's results carry for a resume: the ticket on each final, and checkpoints.

Each final carries a resume ticket, and a session with the attribute `resumable=true` also gets a
checkpoint (a result with no text, only the ticket) when it attaches and every CHECKPOINT_EVERY_SEC
of audio, so its client can drop the audio it keeps for a resume and always holds a fresh ticket.
A ticket names the resume point as it stands when its result goes out (`ResumeLedger`); a resumed
stream starts at the ticket's timeline offset and utterance index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.streaming.events import DecodeDue, FinalDue
from appliance.streaming.resume import ResumeLedger, ResumePoint
from appliance.streaming.segmenter import Segmenter
from appliance.streaming.session import SessionSettings
from appliance.streaming.types import RecognitionResult

CHECKPOINT_EVERY_SEC = 2.0  # of audio, between a resumable session's checkpoints


class Checkpoint:
    """Queued by the reading side; the ticket is written when it goes out (see ResumeLedger)."""


CHECKPOINT = Checkpoint()


class StreamResume:
    def __init__(self, settings: SessionSettings, segmenter: Segmenter, start: ResumePoint,
                 resume_ticket: Callable[[ResumePoint], str] | None):
        """`resume_ticket` signs a resume ticket for a point (None: results carry none)."""
        self._settings = settings
        self._segmenter = segmenter
        self._resume_ticket = resume_ticket
        self._ledger = ResumeLedger()
        self._checkpoint_every = (round(CHECKPOINT_EVERY_SEC * MODEL_SAMPLE_RATE_HZ)
                                  if resume_ticket is not None and settings.resumable else 0)
        self._next_checkpoint_sample = start.timeline_sample

    def decode_due(self, due: DecodeDue) -> None:
        """A decode is about to be submitted: a final is owed from now until it is sent."""
        if isinstance(due, FinalDue):
            self._ledger.final_due(due.utterance_index, due.own_start_sec)

    def checkpoint_due(self) -> bool:
        """True when a resumable session is owed a checkpoint (at most one per call)."""
        if self._checkpoint_every and self._segmenter.timeline_sample >= self._next_checkpoint_sample:
            self._next_checkpoint_sample = self._segmenter.timeline_sample + self._checkpoint_every
            return True
        return False

    def with_ticket(self, final: RecognitionResult) -> RecognitionResult:
        """`final` as it goes out: with the ticket that already counts it as received."""
        self._ledger.final_sent(final.utterance_index)
        if self._resume_ticket is None:
            return final
        point = self._point()
        return dataclasses.replace(final, resume_token=self._resume_ticket(point),
                                   resume_from_sec=round(point.timeline_sec, 6))

    def checkpoint(self) -> RecognitionResult:
        assert self._resume_ticket is not None
        point = self._point()
        s = self._settings
        at = round(point.timeline_sec, 6)
        return RecognitionResult(
            session_id=s.session_id, utterance_index=point.next_utterance_index, is_final=False, text="",
            committed_text="", unstable_text="", start_sec=at, end_sec=at, language=s.language or "",
            language_probability=0.0, decode_latency_sec=0.0, model_id=s.model_id,
            resume_token=self._resume_ticket(point), resume_from_sec=at)

    def _point(self) -> ResumePoint:
        segmenter = self._segmenter
        return self._ledger.point(segmenter.resume_sample, segmenter.utterance_index)
