"""The async shell of one stream: reads chunks, drives the four stages, yields results.

    chunk → gate → frontend (resample on the loop, VAD in the executor) → segmenter → transcriber
                                                                                   ↓ (scheduler)
    results ← ─────────────────────────────────────────────────────────────── outcomes

One task reads chunks (`_ingest`); results come back from the scheduler as callbacks into the
transcriber and wait in `_out` for the transport. Backpressure: while the stream has
`max_pending_per_stream` decodes outstanding, MAX_UNSENT_RESULTS results its client has not read,
or is over its chunk-message rate, chunks are not read (gRPC flow control then slows the sender).
A stream without speech for `session_timeout_sec` (time spent waiting on the server not counted)
ends with ERR1012, however many chunks it sends. Every utterance that received speech ends in one
final or in the error that ended the stream; when the input ends (half-close, or `close_input` on
drain), the open utterance's final is still decoded and sent, and a drained stream then ends with
ERR1015 (the audio after the drain was not heard). A drained `resumable` stream sends the finals
already due but not the open utterance's: its client resumes elsewhere from before that utterance,
which is decoded there whole.

Resume (`appliance.streaming.stream_resume`): each final carries a resume ticket, and a
`resumable=true` session also gets checkpoints; a resumed stream starts at the ticket's timeline
offset and utterance index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor

import numpy as np

from appliance.errors import ApplianceError
from appliance.observability.snapshot import StreamLevels
from appliance.resources import BufferLedger
from appliance.streaming.events import DecodeDue
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import AcceptedAudio, StreamGate
from appliance.streaming.listeners import StreamListener
from appliance.streaming.reader import ChunkReader
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.segmenter import Segmenter, SegmenterConfig
from appliance.streaming.session import SessionSettings
from appliance.streaming.stream_resume import CHECKPOINT, Checkpoint, StreamResume
from appliance.streaming.transcriber import Delivery, StreamEnd, Transcriber
from appliance.streaming.types import AudioIn, RecognitionResult, StreamLimits

log = logging.getLogger(__name__)

MAX_UNSENT_RESULTS = 32  # results a slow reader may leave waiting before the stream stops reading audio


class Stream:
    def __init__(self, settings: SessionSettings, limits: StreamLimits, *, gate: StreamGate, frontend: Frontend,
                 transcriber_factory: Callable[[Callable[[Delivery], None], Callable[[], None]], Transcriber],
                 ledger: BufferLedger, listener: StreamListener,
                 vad_executor: Executor | None = None, start: ResumePoint = START,
                 resume_ticket: Callable[[ResumePoint], str] | None = None):
        """`transcriber_factory(deliver, on_progress)` builds the transcriber (it needs the loop).
        `start`: where the session's timeline stands (a resumed stream's ticket); `resume_ticket`
        signs a resume ticket for a point (None: results carry none)."""
        self._settings = settings
        self._limits = limits
        self._gate = gate
        self._frontend = frontend
        self._out: asyncio.Queue[Delivery | Checkpoint] = asyncio.Queue()
        self._progress = asyncio.Event()
        self._transcriber: Transcriber = transcriber_factory(self._out.put_nowait, self._on_decode_progress)
        self._segmenter = Segmenter(SegmenterConfig.for_session(settings, limits), self._transcriber,
                                    origin_sample=start.timeline_sample,
                                    first_utterance_index=start.next_utterance_index)
        self._resume = StreamResume(settings, self._segmenter, start, resume_ticket)
        self._ledger = ledger
        self._listener = listener
        self._vad_executor = vad_executor
        self._accounted_bytes = 0  # this stream's share of the global buffer ledger
        self._reader: ChunkReader | None = None
        self._input_closed = False  # by the server (drain), not by the client
        self._started_at = time.monotonic()
        self._silent_since = self._started_at  # moved on by speech, and by time spent waiting on us
        self._speech_frames_seen = 0

    @property
    def session_id(self) -> str:
        return self._settings.session_id

    def levels(self, key: str) -> StreamLevels:
        """Where this stream is, under `key` (not its session id: /metrics.json shows no usable ids)."""
        s = self._settings
        return StreamLevels(
            stream=key, protocol=s.protocol, model_id=s.model_id, partials=s.partials, upload_mode=s.upload_mode,
            audio_sec=round(self._gate.audio_sec_received, 2), utterances=self._segmenter.utterance_index,
            buffered_bytes=self._accounted_bytes, pending_decodes=self._transcriber.pending,
            age_sec=round(time.monotonic() - self._started_at, 2))

    def close_input(self) -> None:
        """Stop reading audio (the server drains): the stream ends with ERR1015, which tells a
        resuming client to go on elsewhere (after the open utterance's final, unless resumable)."""
        self._input_closed = True
        if self._reader is not None:
            self._reader.close()

    async def results(self, chunks: AsyncIterable[AudioIn]) -> AsyncIterator[RecognitionResult]:
        self._queue_checkpoint_if_due()
        ingest = asyncio.create_task(self._ingest(chunks))
        try:
            while True:
                item = await self._out.get()
                self._progress.set()  # room for more results: reading may resume
                if isinstance(item, StreamEnd):
                    return
                if isinstance(item, ApplianceError):
                    raise item
                if isinstance(item, Checkpoint):
                    yield self._resume.checkpoint()
                    continue
                if item.is_final:
                    item = self._resume.with_ticket(item)
                self._listener.result_sent(item)
                yield item
        finally:
            ingest.cancel()
            await asyncio.gather(ingest, return_exceptions=True)
            self._transcriber.close()
            self._ledger.apply(-self._accounted_bytes)
            self._accounted_bytes = 0

    # --- ingest -------------------------------------------------------------------------------

    async def _ingest(self, chunks: AsyncIterable[AudioIn]) -> None:
        error: ApplianceError | None = None
        self._reader = reader = ChunkReader(chunks, self._limits.session_timeout_sec)
        if self._input_closed:
            reader.close()
        try:
            while not self._transcriber.ended:
                await self._wait_for_room()
                try:
                    chunk = await reader.next()
                except StopAsyncIteration:
                    if self._input_closed:
                        error = self._drained()
                    break
                await self._accept(chunk)
                self._check_silence()
                self._queue_checkpoint_if_due()
            await self._feed(self._frontend.flush())
        except ApplianceError as err:
            error = err
        except Exception as err:  # a bug must end this stream with a code, not hang it
            log.exception("session %s: ingest failed", self._settings.session_id)
            error = ApplianceError("ERR1016", f"internal error while reading audio: {type(err).__name__}")
        # A resumable session's client resends the open utterance to another node, where it is
        # decoded whole: finalising its first part here would split it in two.
        abandon_open = error is not None and error.code == "ERR1015" and self._settings.resumable
        final = None if abandon_open else self._segmenter.finish()
        if error is None or error.code == "ERR1015":
            self._announce_boundaries()
        if final is not None and not self._transcriber.ended:
            self._submit(final)
        await self._transcriber.wait_idle()  # earlier results go out before the end or the error
        self._out.put_nowait(error or StreamEnd())

    def _drained(self) -> ApplianceError:
        if self._settings.resumable:
            return ApplianceError("ERR1015", "the server is draining: resume the session on another replica "
                                  "(the open utterance was not finalised here)", retry_after_sec=1.0)
        return ApplianceError("ERR1015", "the server is draining: the open utterance got its final; the "
                              "audio after it was not heard", retry_after_sec=1.0)

    async def _admit(self, chunk: AudioIn) -> AcceptedAudio | None:
        """The gate's verdict on a chunk. A batch upload over its byte rate is paced: the chunk waits
        (and gRPC flow control slows the sender) rather than ending the stream with ERR1006."""
        while True:
            try:
                return self._gate.admit(chunk)
            except ApplianceError as err:
                if not (self._gate.paces_byte_rate and err.code == "ERR1006" and err.retry_after_sec):
                    raise
                await asyncio.sleep(err.retry_after_sec)
                self._silent_since += err.retry_after_sec

    async def _wait_for_room(self) -> None:
        """Hold off reading while this stream's decodes are backed up or its chunk rate is spent."""
        started = time.monotonic()
        while not self._transcriber.ended and (self._transcriber.pending >= self._limits.max_pending_per_stream
                                               or self._out.qsize() >= MAX_UNSENT_RESULTS):
            self._progress.clear()
            await self._progress.wait()
        while (wait_sec := self._gate.chunk_wait_sec()) > 0:
            await asyncio.sleep(wait_sec)
        self._silent_since += time.monotonic() - started  # our wait is not the client's silence

    def _check_silence(self) -> None:
        now = time.monotonic()
        if self._segmenter.speech_frames_total != self._speech_frames_seen:
            self._speech_frames_seen = self._segmenter.speech_frames_total
            self._silent_since = now
        timeout_sec = self._limits.session_timeout_sec
        if timeout_sec and now - self._silent_since > timeout_sec:
            raise ApplianceError("ERR1012", f"no speech for {timeout_sec:g} s (server.session_timeout_sec); "
                                 "open a new session when there is something to say")

    async def _accept(self, chunk: AudioIn) -> None:
        audio = await self._admit(chunk)
        if audio is None:
            return
        self._listener.audio_received(self._settings.session_id, audio.pcm16, audio.sample_rate_hz)
        samples = self._frontend.to_model_rate(audio.pcm16, audio.sample_rate_hz)
        self._ledger.admit(samples.nbytes)
        await self._feed(samples)
        self._sync_ledger()

    async def _feed(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._vad_executor, self._frontend.frames, samples)
        segmenter, transcriber = self._segmenter, self._transcriber
        levels = zip(batch.frames, batch.probabilities.tolist(), batch.rms.tolist(), strict=True)
        for frame, probability, level in levels:
            due = segmenter.push(frame, probability, level)
            self._announce_boundaries()
            if due is not None:
                self._submit(due)
                if transcriber.ended:
                    return

    def _submit(self, due: DecodeDue) -> None:
        self._resume.decode_due(due)
        self._transcriber.submit(due)

    def _announce_boundaries(self) -> None:
        boundaries = self._segmenter.take_boundaries()  # taken either way: the list must not grow
        if self._settings.speech_events:
            for boundary in boundaries:
                self._transcriber.announce(boundary)

    def _on_decode_progress(self) -> None:
        self._sync_ledger()
        self._progress.set()

    def _sync_ledger(self) -> None:
        """Keep this stream's share of the global buffer ledger equal to what it holds."""
        held = self._segmenter.buffered_bytes + self._transcriber.queued_audio_bytes
        self._ledger.apply(held - self._accounted_bytes)
        self._accounted_bytes = held

    def _queue_checkpoint_if_due(self) -> None:
        if self._resume.checkpoint_due():
            self._out.put_nowait(CHECKPOINT)
