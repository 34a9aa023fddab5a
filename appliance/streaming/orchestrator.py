"""The life of one stream: chunks in, VAD endpointing, utterances, decodes, results out.

Two tasks per stream: `_ingest` reads chunks, validates and resamples them, runs the VAD and cuts
utterances; `_decode_lane` runs this stream's decodes one at a time, in order, so results leave in
the order their audio arrived and every partial of an utterance precedes its final. Every utterance
that received speech ends in exactly one final, or in the error that ended the stream; when the
client half-closes, the open utterance is decoded and its final sent before the stream ends.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace

import numpy as np

from appliance.audio import MODEL_SAMPLE_RATE_HZ, StreamResampler, pcm16_to_float32, validate_chunk
from appliance.errors import ApplianceError
from appliance.models.backends import Backend
from appliance.resources import BufferLedger
from appliance.scheduler import DecodeScheduler
from appliance.streaming.commit import CommitPolicy, strip_overlap
from appliance.streaming.endpointing import EndpointConfig, Endpointer, FrameEvent
from appliance.streaming.quality import transcript_text
from appliance.streaming.session import SessionSettings
from appliance.streaming.types import AudioIn, RecognitionResult, StreamLimits
from appliance.streaming.utterance import UtteranceBuffer
from appliance.vad import FRAME_SEC, VadStream

log = logging.getLogger(__name__)

_END = object()
CUT_SEARCH_SEC = 1.5  # how far back from the buffer cap to look for a gap between words
PROMPT_CHARS = 200  # previous text given as context after a buffer-cap cut


@dataclass
class _DecodeJob:
    is_final: bool
    utterance_index: int
    audio: np.ndarray
    start_sec: float
    end_sec: float
    commit: CommitPolicy
    after_overlap: bool
    continues_speech: bool  # cut from the previous utterance mid-speech (buffer cap): prompt with its text
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _LaneEnd:
    error: ApplianceError | None


def _seconds(samples: int) -> float:
    return samples / MODEL_SAMPLE_RATE_HZ


class StreamOrchestrator:
    def __init__(self, settings: SessionSettings, limits: StreamLimits, *, vad: VadStream,
                 backend: Backend, scheduler: DecodeScheduler, vad_executor: Executor | None = None,
                 ledger: BufferLedger | None = None, audio_budget: Callable[[int], None] | None = None,
                 on_audio: Callable[[bytes, int], None] | None = None,
                 on_final: Callable[[RecognitionResult], None] | None = None):
        self._settings = settings
        self._on_audio = on_audio  # audio persistence (never blocks)
        self._on_final = on_final  # the opt-in transcript sink
        self._audio_budget = audio_budget  # per-caller inbound byte rate (ERR1006)
        self._ledger = ledger or BufferLedger(None)
        self._accounted_bytes = 0  # this stream's share of the ledger
        self._queued_jobs = 0  # decode jobs queued or running in the lane
        self._queued_audio_bytes = 0
        self._lane_progress = asyncio.Event()
        self._speech_frames_at_last_partial = -1
        self._partials_dropped: dict[int, int] = {}
        self._limits = limits
        self._vad = vad
        self._backend = backend
        self._scheduler = scheduler
        self._vad_executor = vad_executor
        self._resampler = StreamResampler()
        self._endpointer = Endpointer(EndpointConfig(
            threshold=settings.vad_threshold, silence_sec=settings.vad_silence_sec,
            speech_rms_threshold=limits.speech_rms_threshold))
        self._buffer = UtteranceBuffer(preroll_frames=round(limits.preroll_sec / FRAME_SEC))
        self._min_speech_frames = max(1, round(limits.min_speech_sec / FRAME_SEC))
        self._tail_samples = int(limits.tail_sec * MODEL_SAMPLE_RATE_HZ)
        self._cap_samples = self._buffer_cap_samples(settings, limits)
        self._out: asyncio.Queue = asyncio.Queue()
        self._jobs: asyncio.Queue = asyncio.Queue()
        self._timeline_samples = 0
        self._audio_sec_received = 0.0
        self._utterance_index = 0
        self._utterance_speech_frames = 0
        self._samples_at_last_partial = 0
        self._partial_queued = False
        self._commit = CommitPolicy()
        self._after_overlap = False
        self._continues_speech = False
        self._last_final_text = ""
        self._ended = False
        self._input_closed = asyncio.Event()
        self._started_at = time.monotonic()

    @property
    def session_id(self) -> str:
        return self._settings.session_id

    def progress(self) -> dict:
        """Where this stream is, for /metrics.json and the status page (no ids, no text)."""
        s = self._settings
        return {"model_id": s.model_id, "partials": s.partials, "upload_mode": s.upload_mode,
                "audio_sec": round(self._audio_sec_received, 2), "utterances": self._utterance_index,
                "buffered_bytes": self._accounted_bytes, "pending_decodes": self._queued_jobs,
                "age_sec": round(time.monotonic() - self._started_at, 2)}

    def close_input(self) -> None:
        """Stop reading audio as if the client had half-closed (used when the server drains):
        the open utterance still gets its final, then the stream ends normally."""
        self._input_closed.set()

    @staticmethod
    def _buffer_cap_samples(settings: SessionSettings, limits: StreamLimits) -> int | None:
        caps = []
        if limits.max_buffer_sec:
            caps.append(int(limits.max_buffer_sec * MODEL_SAMPLE_RATE_HZ))
        if limits.max_buffer_bytes:
            caps.append(limits.max_buffer_bytes // 2)  # counted as 16-bit PCM at the model rate
        if settings.partials and limits.partial_interval_sec:
            # Partials compare whole-utterance hypotheses; past the partial window an utterance is
            # cut into a final so the committed/unstable split stays exact.
            caps.append(int(limits.partial_window_sec * MODEL_SAMPLE_RATE_HZ))
        return max(MODEL_SAMPLE_RATE_HZ, min(caps)) if caps else None

    async def results(self, chunks: AsyncIterable[AudioIn]) -> AsyncIterator[RecognitionResult]:
        ingest = asyncio.create_task(self._ingest(chunks))
        lane = asyncio.create_task(self._decode_lane())
        try:
            while True:
                item = await self._out.get()
                if item is _END:
                    return
                if isinstance(item, ApplianceError):
                    raise item
                yield item
        finally:
            ingest.cancel()
            lane.cancel()
            await asyncio.gather(ingest, lane, return_exceptions=True)
            self._scheduler.drop_queued_partials(self._settings.session_id, finals_too=True)
            self._ledger.apply(-self._accounted_bytes)
            self._accounted_bytes = 0

    def _sync_ledger(self) -> None:
        """Keep this stream's share of the global buffer ledger equal to what it holds."""
        held = self._buffer.samples * 2 + self._queued_audio_bytes
        self._ledger.apply(held - self._accounted_bytes)
        self._accounted_bytes = held

    # --- ingest -------------------------------------------------------------------------------

    async def _ingest(self, chunks: AsyncIterable[AudioIn]) -> None:
        error: ApplianceError | None = None
        timeout = self._limits.session_timeout_sec if self._limits.session_timeout_sec > 0 else None
        iterator = chunks.__aiter__()
        try:
            while not self._ended:
                await self._wait_for_lane_room()
                try:
                    chunk = await self._next_chunk(iterator, timeout)
                except StopAsyncIteration:
                    break
                await self._accept(chunk)
            tail = self._resampler.flush()
            if tail.size:
                await self._feed(tail)
        except ApplianceError as err:
            error = err
        except Exception as err:  # a bug must end this stream with a code, not hang it
            log.exception("session %s: ingest failed", self._settings.session_id)
            error = ApplianceError("ERR1016", f"internal error while reading audio: {type(err).__name__}")
        self._finish_utterance()
        await self._jobs.put(_LaneEnd(error))

    async def _wait_for_lane_room(self) -> None:
        """Backpressure: while this stream has max_pending_decodes_per_stream decodes queued, stop
        reading its chunks (gRPC flow control then slows the sender) instead of dropping finals."""
        while self._queued_jobs >= self._limits.max_pending_per_stream and not self._ended:
            self._lane_progress.clear()
            await self._lane_progress.wait()

    async def _next_chunk(self, iterator, timeout: float | None) -> AudioIn:
        """The next chunk; StopAsyncIteration at half-close or close_input(), ERR1012 when idle too long."""
        if self._input_closed.is_set():
            raise StopAsyncIteration
        read = asyncio.ensure_future(iterator.__anext__())
        closed = asyncio.ensure_future(self._input_closed.wait())
        try:
            done, _ = await asyncio.wait((read, closed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not read.done():
                read.cancel()  # also when this task is cancelled: no orphaned read of the stream
            elif not read.cancelled():
                read.exception()  # mark a half-close seen, even if this task is being cancelled
        if read in done:
            return read.result()
        if closed in done:
            raise StopAsyncIteration
        raise ApplianceError("ERR1012", f"no audio received for {timeout:g} s (server.session_timeout_sec)")

    async def _accept(self, chunk: AudioIn) -> None:
        settings = self._settings
        if settings.token and not hmac.compare_digest(chunk.session_token.encode(), settings.token.encode()):
            raise ApplianceError("ERR1005", "session_token does not match the token issued by CreateSession")
        if chunk.session_id and chunk.session_id != settings.session_id:
            raise ApplianceError(
                "ERR1003", f"chunk session_id {chunk.session_id!r} differs from the stream's {settings.session_id!r}")
        if not chunk.pcm16:
            return
        if self._audio_budget is not None:
            self._audio_budget(len(chunk.pcm16))
        rate_hz = chunk.sample_rate_hz or self._limits.default_sample_rate_hz
        max_chunk_ms = None if settings.upload_mode == "batch" else self._limits.max_chunk_ms
        self._audio_sec_received += validate_chunk(chunk.pcm16, rate_hz, max_chunk_ms)
        if self._on_audio is not None:
            self._on_audio(chunk.pcm16, rate_hz)
        cap_sec = self._limits.max_audio_sec_per_session
        if cap_sec and self._audio_sec_received > cap_sec:
            raise ApplianceError(
                "ERR1013", f"session sent {self._audio_sec_received:.1f} s of audio; "
                f"server.max_audio_seconds_per_session is {cap_sec:g} s")
        samples = self._resampler(pcm16_to_float32(chunk.pcm16), rate_hz)
        self._ledger.admit(samples.size * 2)
        await self._feed(samples)
        self._sync_ledger()

    async def _feed(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        loop = asyncio.get_running_loop()
        frames, probs = await loop.run_in_executor(self._vad_executor, self._vad.process, samples)
        if not len(frames):
            return
        frame_rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
        for frame, probability, level in zip(frames, probs, frame_rms):
            self._on_frame(frame, float(probability), float(level))
            if self._ended:
                return

    def _on_frame(self, frame: np.ndarray, probability: float, level: float) -> None:
        frame_start = self._timeline_samples
        self._timeline_samples += frame.size
        event = self._endpointer.push(probability, level)
        buffer = self._buffer
        if not buffer.is_open:
            if event is not FrameEvent.SPEECH_START:
                buffer.idle_frame(frame, probability)
                return
            buffer.open(frame_start)
            self._utterance_speech_frames = 0
            self._samples_at_last_partial = 0
        buffer.append(frame, probability)
        if self._endpointer.in_speech and self._endpointer.trailing_silence_frames == 0:
            self._utterance_speech_frames += 1
            buffer.last_speech_end_sample = self._timeline_samples
        if event is FrameEvent.SPEECH_END and self._settings.emit_final_on_vad:
            self._finish_utterance()
        elif self._cap_samples and buffer.samples >= self._cap_samples:
            self._cut_at_cap()
        else:
            self._maybe_queue_partial()

    # --- utterances ---------------------------------------------------------------------------

    def _finish_utterance(self) -> None:
        """Close the open utterance; queue its final if it held enough speech."""
        buffer = self._buffer
        if not buffer.is_open:
            return
        if self._utterance_speech_frames >= self._min_speech_frames:
            end = min(buffer.last_speech_end_sample + self._tail_samples, self._timeline_samples)
            self._queue_final(buffer.audio(end_sample=end), buffer.start_sample, buffer.last_speech_end_sample)
        buffer.close()
        self._after_overlap = False
        self._continues_speech = False

    def _cut_at_cap(self) -> None:
        """The utterance reached the buffer cap: cut it in its quietest recent frame.

        The part before the cut gets its final; `buffer_overlap_sec` of audio before the cut plus
        everything after it starts the next utterance (the overlap's words are removed from the
        next result, see `strip_overlap`).
        """
        buffer = self._buffer
        had_speech = self._utterance_speech_frames >= self._min_speech_frames
        overlap_frames = round(self._limits.buffer_overlap_sec / FRAME_SEC) if had_speech else 0
        head, cut_sample, after_cut_probs = buffer.split_at_quietest(
            search_frames=round(CUT_SEARCH_SEC / FRAME_SEC), overlap_frames=overlap_frames)
        if had_speech:
            self._queue_final(head, cut_sample - head.size, cut_sample)
        self._after_overlap = overlap_frames > 0
        self._continues_speech = had_speech
        self._utterance_speech_frames = sum(p >= self._settings.vad_threshold for p in after_cut_probs)
        self._samples_at_last_partial = 0

    def _queue_final(self, audio: np.ndarray, start_sample: int, end_sample: int) -> None:
        # A queued partial of this stream would only delay its final: drop it.
        self._scheduler.drop_queued_partials(self._settings.session_id)
        self._put_job(_DecodeJob(
            is_final=True, utterance_index=self._utterance_index, audio=audio,
            start_sec=_seconds(start_sample), end_sec=_seconds(end_sample),
            commit=self._commit, after_overlap=self._after_overlap, continues_speech=self._continues_speech))
        self._utterance_index += 1
        self._commit = CommitPolicy()
        self._speech_frames_at_last_partial = -1

    def _maybe_queue_partial(self) -> None:
        interval_sec = self._limits.partial_interval_sec
        if not self._settings.partials or not interval_sec or self._partial_queued:
            return
        buffer = self._buffer
        if buffer.samples - self._samples_at_last_partial < interval_sec * MODEL_SAMPLE_RATE_HZ:
            return
        if self._utterance_speech_frames < self._min_speech_frames:
            return
        self._samples_at_last_partial = buffer.samples
        if self._limits.partial_skip_unchanged and self._utterance_speech_frames == self._speech_frames_at_last_partial:
            return  # only silence since the last partial: its text cannot have changed
        if self._queued_jobs >= self._limits.max_pending_per_stream:
            self._partials_dropped[self._utterance_index] = self._partials_dropped.get(self._utterance_index, 0) + 1
            return
        self._speech_frames_at_last_partial = self._utterance_speech_frames
        self._partial_queued = True
        self._put_job(_DecodeJob(
            is_final=False, utterance_index=self._utterance_index, audio=buffer.audio(),
            start_sec=_seconds(buffer.start_sample), end_sec=_seconds(self._timeline_samples),
            commit=self._commit, after_overlap=self._after_overlap, continues_speech=self._continues_speech))

    def _put_job(self, job: _DecodeJob) -> None:
        self._queued_jobs += 1
        self._queued_audio_bytes += job.audio.size * 2
        self._jobs.put_nowait(job)

    def _job_done(self, job: _DecodeJob) -> None:
        self._queued_jobs -= 1
        self._queued_audio_bytes -= job.audio.size * 2
        self._sync_ledger()
        self._lane_progress.set()

    # --- decoding -----------------------------------------------------------------------------

    async def _decode_lane(self) -> None:
        while True:
            job = await self._jobs.get()
            if isinstance(job, _LaneEnd):
                self._out.put_nowait(job.error or _END)
                return
            try:
                if job.is_final:
                    await self._run_final(job)
                else:
                    self._partial_queued = False
                    if job.utterance_index == self._utterance_index:  # else its final is already queued
                        await self._run_partial(job)
                self._job_done(job)
            except ApplianceError as err:
                self._out.put_nowait(err)
                return
            except Exception as err:  # a bug must end this stream with a code, not hang it
                log.exception("session %s: decode lane failed", self._settings.session_id)
                self._out.put_nowait(ApplianceError("ERR1016", f"internal error: {type(err).__name__}"))
                return
            if self._ended:
                self._out.put_nowait(_END)
                return

    async def _decode_text(self, job: _DecodeJob):
        s = self._settings
        options = s.decode_options
        if job.continues_speech and self._last_final_text and options.initial_prompt is None:
            # The buffer cap cut continuous speech: the previous piece's words are the context the
            # model would have had (this is not conditioning across silence).
            options = replace(options, initial_prompt=self._last_final_text[-PROMPT_CHARS:])
        transcript = await self._scheduler.decode(
            self._backend, job.audio, options, language=s.language, task=s.task, is_final=job.is_final,
            stream_id=s.session_id)
        if transcript is None:
            self._partials_dropped[job.utterance_index] = self._partials_dropped.get(job.utterance_index, 0) + 1
            return None, None
        text = transcript_text(transcript, s.decode_options)
        if job.after_overlap:
            text = strip_overlap(self._last_final_text, text)
        log.debug("session %s utterance %d %s: %.2f s audio decoded in %.3f s, %d words",
                  s.session_id, job.utterance_index, "final" if job.is_final else "partial",
                  transcript.audio_sec, transcript.decode_sec, len(text.split()))
        return text, transcript

    async def _run_partial(self, job: _DecodeJob) -> None:
        text, transcript = await self._decode_text(job)
        if transcript is None:
            return
        committed, unstable = job.commit.partial(text)
        self._emit(job, transcript, is_final=False, committed=committed, unstable=unstable)

    async def _run_final(self, job: _DecodeJob) -> None:
        text, transcript = await self._decode_text(job)
        text = job.commit.final(text)
        if text:
            self._last_final_text = text
        self._emit(job, transcript, is_final=True, committed=text, unstable="")
        if self._settings.vad_mode == "auto" and text:
            self._ended = True

    def _emit(self, job: _DecodeJob, transcript, *, is_final: bool, committed: str, unstable: str) -> None:
        text = f"{committed} {unstable}".strip()
        result = RecognitionResult(
            session_id=self._settings.session_id, utterance_index=job.utterance_index, is_final=is_final,
            text=text, committed_text=committed, unstable_text=unstable,
            start_sec=round(job.start_sec, 3), end_sec=round(job.end_sec, 3),
            language=transcript.language, language_probability=transcript.language_probability,
            decode_latency_sec=transcript.decode_sec, model_id=self._settings.model_id,
            partials_dropped=self._partials_dropped.pop(job.utterance_index, 0) if is_final
            else self._partials_dropped.get(job.utterance_index, 0),
            queued_to_sent_sec=time.monotonic() - job.queued_at, decoded_audio_sec=transcript.audio_sec)
        if is_final and text and self._on_final is not None:
            self._on_final(result)
        self._out.put_nowait(result)
