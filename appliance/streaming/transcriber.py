"""Stage 4, transcriber: decodes due → results, through the shared scheduler.

Submits each `PartialDue`/`FinalDue` to the stream's queue in the scheduler (which owns their order)
and turns each outcome into a `RecognitionResult`: the quality filter drops what Whisper invents,
the words a cut's overlap repeats are removed, and the utterance's commit policy splits partials
into committed and unstable text and keeps the final true to what was committed. In auto-end mode
the first final with text ends the stream. Outcomes arrive on the event loop, in submission order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.decode_options import DecodeOptions
from appliance.errors import ApplianceError
from appliance.models.backends import Backend, Transcript
from appliance.scheduler import DecodeScheduler
from appliance.streaming.commit import CommitPolicy, strip_overlap
from appliance.streaming.events import DecodeDue, FinalDue, PartialDue, SpeechBoundary
from appliance.streaming.prompt_context import Context, PromptContext
from appliance.streaming.quality import kept_segments, transcript_confidence, transcript_text
from appliance.streaming.session import SessionSettings
from appliance.streaming.types import RecognitionResult
from appliance.streaming.word_timing import Word, align_words

log = logging.getLogger(__name__)


class StreamEnd:
    """Delivered after the last result of a stream that ended by itself (auto-end mode)."""


STREAM_END = StreamEnd()
Delivery = RecognitionResult | ApplianceError | StreamEnd


@dataclass(eq=False)
class _Job:
    due: DecodeDue
    commit: CommitPolicy  # the utterance's, shared by its partials and its final
    queued_at: float = field(default_factory=time.monotonic)
    # The previous final as the prompt: which kind of context, and the prompt (set when the decode
    # is prepared); `no_context` once a pause prompt misfired and the final is decoded again.
    context: Context = Context.NONE
    prompt: str | None = None
    no_context: bool = False


class Transcriber:
    """`deliver` gets every result, then at most one `ApplianceError` (the stream's end) or
    `STREAM_END`; `on_progress` is called after each decode outcome (backpressure, buffer ledger)."""

    def __init__(self, settings: SessionSettings, scheduler: DecodeScheduler, backend: Backend, *,
                 deliver: Callable[[Delivery], None], on_progress: Callable[[], None] | None = None,
                 max_pending: int = 0):
        self._settings = settings
        self._scheduler = scheduler
        self._deliver = deliver
        self._on_progress = on_progress
        self._queue = scheduler.open_stream(settings.session_id, backend, language=settings.language,
                                            task=settings.task, on_done=self._decoded, prepare=self._options_for,
                                            max_pending=max_pending, client_tuned=settings.decode_overridden)
        self._commit = CommitPolicy()
        self._partials_dropped: dict[int, int] = {}  # per utterance, until its final reports them
        self._context = PromptContext.for_silence(settings.vad_silence_sec, pause=settings.pause_context)
        # The hypothesis of the last speculative partial, while it may still become its final.
        self._speculation: tuple[_Job, Transcript] | None = None
        self._speculating: _Job | None = None  # the last speculative partial submitted, its outcome not yet in
        self._adoption: tuple[_Job, _Job] | None = None  # (the speculation still decoding, the final waiting for it)
        self._backend = backend
        self._idle = asyncio.Event()
        self._idle.set()
        self.ended = False  # a final ended the stream (auto mode) or a decode failed

    # --- what the stream shell and the segmenter read -----------------------------------------

    @property
    def pending(self) -> int:
        return self._queue.pending

    @property
    def partial_waiting(self) -> bool:
        return self._queue.partial_waiting

    @property
    def decode_demand(self) -> float:
        return self._scheduler.demand()

    @property
    def decode_room(self) -> bool:
        return self._scheduler.room_to_speculate()

    @property
    def queued_audio_bytes(self) -> int:
        return self._queue.queued_audio_bytes

    async def wait_idle(self) -> None:
        """Until every submitted decode has its outcome (or the stream ended)."""
        await self._idle.wait()

    # --- in -----------------------------------------------------------------------------------

    def submit(self, due: DecodeDue) -> None:
        job = _Job(due, self._commit)
        if due.is_final:
            self._commit = CommitPolicy()
            if self._reuse_speculation(job) or self._adopt_running_speculation(job):
                return
        elif _speculative(due):
            self._speculating = job
        self._queue.submit(due.audio, is_final=due.is_final, payload=job, speculative=_speculative(due))
        self._update_idle()

    def _adopt_running_speculation(self, job: _Job) -> bool:
        """The final's audio is being decoded right now by the speculative partial (the one decode
        this stream has outstanding): wait for that hypothesis rather than queue the same decode
        behind it. If that partial fails to deliver, the final is decoded after all."""
        speculating = self._speculating
        if (speculating is None or self._queue.pending != 1 or self._queue.partial_waiting
                or not (reuses_hypotheses(self._backend) and may_reuse(job.due, speculating.due))):
            return False
        self._adoption = (speculating, replace(job, queued_at=time.monotonic()))
        return True

    def _reuse_speculation(self, job: _Job) -> bool:
        """A final whose audio the last (speculative) partial already decoded, with the same options
        and nothing of this stream still queued, takes that hypothesis now instead of decoding it
        again: the final goes out as soon as the endpoint is seen."""
        speculation, self._speculation = self._speculation, None
        if (speculation is None or self._queue.pending
                or not (reuses_hypotheses(self._backend) and may_reuse(job.due, speculation[0].due))
                or looks_again(self._backend, self._scheduler, speculation[1])):
            return False  # not the partial the segmenter meant (dropped, still queued), or too unsure
        # No decode ran for this final: nothing to add to decode time or the real-time factor.
        transcript = replace(speculation[1], decode_sec=0.0, audio_sec=0.0)
        log.debug("session %s utterance %d: final reuses the partial decoded as silence began",
                  self._settings.session_id, job.due.utterance_index)
        self._result(replace(job, queued_at=time.monotonic()), transcript)
        return True

    def announce(self, boundary: SpeechBoundary) -> None:
        """A speech event goes out at once: ahead of decodes still queued, so a kiosk hears that the
        user started talking while the previous utterance's final is still being decoded."""
        if not self.ended:
            self._deliver(speech_event(self._settings, boundary))

    def close(self) -> None:
        self.ended = True
        self._queue.close()
        self._idle.set()

    def _update_idle(self) -> None:
        if self.ended or self._queue.pending == 0:
            self._idle.set()
        else:
            self._idle.clear()

    def _options_for(self, job: _Job) -> DecodeOptions:
        """Asked when the decode is next in line, so the previous final's text is known."""
        options = self._settings.decode_options
        # Partials never pay for word timings, except a speculative one: it may become the final
        # (its words are kept for that, not sent on the partial), and aligning is no second decode.
        word_timestamps = self._settings.word_timestamps and (job.due.is_final or _speculative(job.due))
        if options.word_timestamps != word_timestamps:
            options = replace(options, word_timestamps=word_timestamps)
        if options.initial_prompt is None:  # the previous final as context (`prompt_context`)
            job.context, job.prompt = self._context.choose(job.due, job.no_context)
            if job.prompt:
                options = replace(options, initial_prompt=job.prompt)
        return options

    def _drop_misfire(self, job: _Job, transcript: Transcript, final: _Job | None = None) -> bool:
        """Whether the decode of `job` misfired (`PromptContext.misfired`) and was dropped: a partial
        is, the final (its own or `final`, waiting for it) is decoded again without the prompt,
        unless more of this stream is queued (results keep their order: then it stands)."""
        text = transcript_text(transcript, self._settings.decode_options)
        if not self._context.misfired(job, transcript.language, text, job.due.audio.size / MODEL_SAMPLE_RATE_HZ,
                                      job.due.utterance_index, transcript):
            return False
        self._context.unprompted_utterance = job.due.utterance_index
        if final is not None or job.due.is_final:
            if self._queue.pending:
                return False
            self._redo_without_context(final or job)
            return True
        self._speculation = None
        self._count_dropped(job)
        return True

    def _count_dropped(self, partial: _Job) -> None:
        """On its final's `partials_dropped`; not in a finals-only session, whose client asked for none."""
        if self._settings.partials:
            index = partial.due.utterance_index
            self._partials_dropped[index] = self._partials_dropped.get(index, 0) + 1

    def _redo_without_context(self, final: _Job) -> None:
        log.debug("session %s utterance %d: pause prompt misfired", self._settings.session_id,
                  final.due.utterance_index)
        self._queue.submit(final.due.audio, is_final=True,
                           payload=replace(final, context=Context.NONE, prompt=None, no_context=True))

    # --- out ----------------------------------------------------------------------------------

    def _decoded(self, job: _Job, transcript: Transcript | None, error: ApplianceError | None) -> None:
        if self.ended:
            return
        if job is self._speculating:
            self._speculating = None
        if self._adoption is not None and job is self._adoption[0] and error is None:
            self._adopted(transcript)
        elif error is not None:
            self.close()
            self._deliver(error)
        elif transcript is None:  # a partial dropped under load
            self._speculation = None
            self._count_dropped(job)
        elif self._drop_misfire(job, transcript):
            pass
        elif not job.due.is_final and not self._settings.partials:
            # a finals-only session's speculative decode: never sent, kept for the final it may become
            self._speculation = (job, transcript)
        else:
            self._result(job, transcript)
        self._update_idle()
        if self._on_progress is not None:
            self._on_progress()

    def _adopted(self, transcript: Transcript | None) -> None:
        """The hypothesis of the speculative partial a final was waiting for becomes that final's;
        if the partial was dropped instead (or `looks_again`), the final is decoded in its own right."""
        assert self._adoption is not None
        speculating, final = self._adoption
        self._adoption = None
        if transcript is None or looks_again(self._backend, self._scheduler, transcript):
            self._queue.submit(final.due.audio, is_final=True, payload=final)
        elif not self._drop_misfire(speculating, transcript, final):
            log.debug("session %s utterance %d: final takes the partial decoded as silence began",
                      self._settings.session_id, final.due.utterance_index)
            self._result(final, transcript)

    def _result(self, job: _Job, transcript: Transcript) -> None:
        due = job.due
        s = self._settings
        text = transcript_text(transcript, s.decode_options)
        if job.no_context and due.is_final:  # decoded again without its prompt: the longer of the two
            transcript = self._context.longer(due.utterance_index, transcript, text)
            text = transcript_text(transcript, s.decode_options)
        if due.after_overlap:
            text = strip_overlap(self._context.last_text, text)
        log.debug("session %s utterance %d %s: %.2f s audio decoded in %.3f s, %d words",
                  self._settings.session_id, due.utterance_index, "final" if due.is_final else "partial",
                  transcript.audio_sec, transcript.decode_sec, len(text.split()))
        if due.is_final:
            committed, unstable = job.commit.final(text), ""
            if committed:
                self._context.final_sent(committed, due.end_sec, transcript.language,
                                         due.audio.size / MODEL_SAMPLE_RATE_HZ)
            dropped = self._partials_dropped.pop(due.utterance_index, 0)
            words = final_words(committed, transcript, s, due)
        else:
            committed, unstable = job.commit.partial(text)
            dropped = self._partials_dropped.get(due.utterance_index, 0)
            words = ()
            self._speculation = (job, transcript) if _speculative(due) else None
        self._deliver(recognition_result(s, job, transcript, committed, unstable, dropped, words))
        if due.is_final and committed and s.vad_mode == "auto":
            self.close()
            self._deliver(STREAM_END)


def final_words(committed: str, transcript: Transcript, s: SessionSettings, due: DecodeDue) -> tuple[Word, ...]:
    """The final's words, aligned to its committed text, inside the due's own audio (a reused
    hypothesis reports no decoded audio: audio_sec 0)."""
    aligned = [w for segment in kept_segments(transcript, s.decode_options) for w in segment.words]
    return align_words(committed, aligned, offset_sec=due.start_sec,
                       end_sec=due.start_sec + due.audio.size / MODEL_SAMPLE_RATE_HZ)


def recognition_result(s: SessionSettings, job: _Job, transcript: Transcript, committed: str, unstable: str,
                       dropped: int, words: tuple[Word, ...]) -> RecognitionResult:
    due = job.due
    return RecognitionResult(
        session_id=s.session_id, utterance_index=due.utterance_index, is_final=due.is_final,
        text=f"{committed} {unstable}".strip(), committed_text=committed, unstable_text=unstable,
        start_sec=round(due.start_sec, 3), end_sec=round(due.end_sec, 3),
        language=transcript.language, language_probability=transcript.language_probability,
        decode_latency_sec=transcript.decode_sec, model_id=s.model_id, partials_dropped=dropped,
        queued_to_sent_sec=time.monotonic() - job.queued_at, decoded_audio_sec=transcript.audio_sec,
        words=words, confidence=round(transcript_confidence(transcript, s.decode_options), 4))


def speech_event(s: SessionSettings, boundary: SpeechBoundary) -> RecognitionResult:
    at = round(boundary.at_sec, 3)
    return RecognitionResult(
        session_id=s.session_id, utterance_index=boundary.utterance_index, is_final=False, text="",
        committed_text="", unstable_text="", start_sec=at, end_sec=at, language=s.language or "",
        language_probability=0.0, decode_latency_sec=0.0, model_id=s.model_id, speech_event=boundary.kind)


def reuses_hypotheses(backend: Backend) -> bool:
    """A backend that decodes partials on a shorter encoder window than finals (encode_window
    "partials") would hand a final a partial's lesser hypothesis: no reuse there."""
    return getattr(backend, "encode_window", "full") != "partials"


def looks_again(backend: Backend, scheduler: DecodeScheduler, speculated: Transcript) -> bool:
    """A final decoded now would look twice at this reading (unsure, and the box has room:
    DecodeScheduler.room_for_second_look), so the speculation's one look may not stand for it."""
    return backend.wants_second_look(speculated) and scheduler.room_for_second_look()


def may_reuse(due: DecodeDue, guess: DecodeDue) -> bool:
    """Whether the final `due` may take the hypothesis of the speculative `guess` (same audio, options)."""
    return (isinstance(due, FinalDue) and due.same_as_partial
            and (guess.utterance_index, guess.start_sec, guess.audio.size)
            == (due.utterance_index, due.start_sec, due.audio.size))


def _speculative(due: DecodeDue) -> bool:
    """A partial on exactly the audio its final will decode, issued once silence began."""
    return isinstance(due, PartialDue) and due.speculative
