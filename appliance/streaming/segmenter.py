"""Stage 3, segmenter: frames in, utterances out — endpointing, buffer caps and cuts, partial cadence.

Pure per-stream logic over 32 ms frames (no I/O, no clock): each frame may yield one `FinalDue`
(the utterance ended at an endpoint, or reached the buffer cap and was cut in its quietest recent
frame) or one `PartialDue` (the partial cadence came round). `finish()` closes the open utterance
at the end of the input. Whether a partial is worth issuing, and how soon, depends on the stream's
decode backlog and the decoders' load, which the segmenter reads through the narrow `DecodeBacklog`
view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.audio import MODEL_SAMPLE_RATE_HZ
from appliance.streaming.cadence import PartialCadence
from appliance.streaming.endpointing import EndpointConfig, Endpointer, FrameEvent
from appliance.streaming.events import DecodeDue, FinalDue, PartialDue, SpeechBoundary
from appliance.streaming.preroll import most_preroll_frames, opening_preroll_frames, preroll_to_drop
from appliance.streaming.session import SessionSettings
from appliance.streaming.snr import SpeechToNoise
from appliance.streaming.types import StreamLimits
from appliance.streaming.utterance import UtteranceBuffer
from appliance.vad import FRAME_SAMPLES, FRAME_SEC

# How far back from the buffer cap to look for a pause to cut in: a quarter of the cap (5 s at the
# default 20 s), at least 1.5 s. In noise the VAD reads few gaps between words as silence, so the last
# 1.5 s held a real pause for about half the cuts; 5 s finds one for 7 to 9 of 10 (docs/accuracy.md).
CUT_SEARCH_MIN_SEC = 1.5
CUT_SEARCH_CAP_FRACTION = 0.25
# Speech less than this far above the stream's noise floor (as `SpeechToNoise` estimates it) is
# decoded with the previous final's text as context, as offline Whisper conditions on earlier text.
# In clean speech that context costs more than it gives; in noise it is what offline had over us.
NOISY_BELOW_DB = 10.0
# A stream resumed after a dropped connection starts this much before the speech it must not lose:
# a fresh VAD needs a little audio before an onset, and the decode its pre-roll (started right at the
# onset, Whisper can invent words). Whole frames, so the resumed frames fall on the original grid.
RESUME_LEAD_FRAMES = 16


class DecodeBacklog(Protocol):
    @property
    def partial_waiting(self) -> bool:
        """A partial of this stream is queued and not yet running: another would only repeat it."""
        ...

    @property
    def decode_demand(self) -> float:
        """Recent load of the shared decoders (`DecodeScheduler.demand`): sets the partial cadence."""
        ...

    @property
    def decode_room(self) -> bool:
        """A decode slot is idle and nothing else wants it (`DecodeScheduler.room_to_speculate`)."""
        ...


@dataclass(frozen=True)
class SegmenterConfig:
    endpoint: EndpointConfig
    emit_final_on_vad: bool  # False: one utterance until a cap or the end of input
    cadence: PartialCadence | None  # None: no partials
    partial_skip_unchanged: bool
    cap_samples: int | None  # utterance length that forces a cut
    overlap_sec: float  # audio before a cut that the next utterance repeats
    preroll_sec: float
    tail_sec: float
    min_speech_sec: float
    # Decode the final's audio at tail_sec of silence, to reuse at the endpoint: always, never, or
    # auto: only while the decoders have room for it (`DecodeBacklog.decode_room`).
    speculation: str = "always"

    @classmethod
    def for_session(cls, settings: SessionSettings, limits: StreamLimits) -> SegmenterConfig:
        return cls(
            endpoint=EndpointConfig(threshold=settings.vad_threshold, silence_sec=settings.vad_silence_sec,
                                    speech_rms_threshold=limits.speech_rms_threshold),
            emit_final_on_vad=settings.emit_final_on_vad,
            cadence=partial_cadence(limits) if settings.partials else None,
            partial_skip_unchanged=limits.partial_skip_unchanged,
            cap_samples=buffer_cap_samples(settings, limits), overlap_sec=limits.buffer_overlap_sec,
            preroll_sec=limits.preroll_sec, tail_sec=limits.tail_sec, min_speech_sec=limits.min_speech_sec,
            # finals-only sessions as `server.speculative_finals` says; partial sessions always
            speculation="always" if settings.partials else limits.speculative_finals)


def partial_cadence(limits: StreamLimits) -> PartialCadence | None:
    fastest = limits.partial_interval_sec
    if not fastest:
        return None
    return PartialCadence(first_sec=limits.partial_first_sec or fastest, fastest_sec=fastest,
                          slowest_sec=max(fastest, limits.partial_interval_max_sec or fastest))


def cut_search_frames(cap_samples: int) -> int:
    """Frames back from a buffer cap of `cap_samples` that a cut may land in."""
    return round(max(CUT_SEARCH_MIN_SEC, CUT_SEARCH_CAP_FRACTION * cap_samples / MODEL_SAMPLE_RATE_HZ) / FRAME_SEC)


def buffer_cap_samples(settings: SessionSettings, limits: StreamLimits) -> int | None:
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


def _seconds(samples: int) -> float:
    return samples / MODEL_SAMPLE_RATE_HZ


class Segmenter:
    def __init__(self, config: SegmenterConfig, backlog: DecodeBacklog, *, origin_sample: int = 0,
                 first_utterance_index: int = 0):
        """`origin_sample` and `first_utterance_index`: where the timeline and the utterance count
        stand when the stream starts (not 0 when it resumes a session after a dropped connection)."""
        self._config = config
        self._backlog = backlog
        self._endpointer = Endpointer(config.endpoint)
        self._buffer = UtteranceBuffer(preroll_frames=most_preroll_frames(config.preroll_sec))
        self._min_speech_frames = max(1, round(config.min_speech_sec / FRAME_SEC))
        self._tail_samples = int(config.tail_sec * MODEL_SAMPLE_RATE_HZ)
        self._timeline_samples = origin_sample
        self._buffer.last_speech_end_sample = origin_sample
        # Where the open utterance's own audio starts: its pre-roll, or after a cut the cut itself
        # (the overlap before it belongs to the previous final).
        self._open_from_sample = origin_sample
        # A resume point never reaches back past the last final's speech and tail (on the frame grid).
        self._resume_floor_sample = origin_sample
        self.utterance_index = first_utterance_index  # of the open (or next) utterance
        self.speech_frames_total = 0  # every speech frame so far: the stream's idle timer watches it
        self._speech_frames = 0  # in the open utterance, across cuts
        self._samples_at_last_partial = 0  # buffer length at the last partial; 0: none yet in this utterance
        self._samples_at_onset = 0  # buffer length (pre-roll, or overlap after a cut) when speech began
        self._speech_frames_at_last_partial = -1
        self._after_overlap = False
        self._continues_speech = False
        self._boundaries: list[SpeechBoundary] = []
        self._snr = SpeechToNoise()
        self._unsettled_preroll = False  # the open utterance holds the longer pre-roll, undecided
        # A partial decoded on the final's exact audio when silence began: its end sample, else -1.
        self._speculated_end_sample = -1
        tail_frames = max(1, round(config.tail_sec / FRAME_SEC))
        self._speculate_at_silence_frames = (
            tail_frames if config.speculation != "never" and config.emit_final_on_vad
            and tail_frames < round(config.endpoint.silence_sec / FRAME_SEC) else 0)

    def take_boundaries(self) -> list[SpeechBoundary]:
        """Where the VAD opened and closed utterances since the last call, in order. A cut at the
        buffer cap is not one: the speech goes on."""
        if not self._boundaries:
            return []
        boundaries, self._boundaries = self._boundaries, []
        return boundaries

    @property
    def buffered_samples(self) -> int:
        return self._buffer.samples

    @property
    def timeline_sample(self) -> int:
        """The timeline position of the end of the last frame pushed."""
        return self._timeline_samples

    @property
    def resume_sample(self) -> int:
        """Where a resumed stream must start so that no speech after the finals already made is
        lost: a lead before the open utterance (after a buffer-cap cut: the cut itself, as the
        speech goes on), or between utterances, a lead before the pre-roll an onset now would take."""
        buffer = self._buffer
        if buffer.is_open and self._continues_speech:
            return self._open_from_sample
        onset = self._open_from_sample if buffer.is_open else self._timeline_samples - buffer.preroll_samples
        return max(self._resume_floor_sample, onset - RESUME_LEAD_FRAMES * FRAME_SAMPLES)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer.samples * np.dtype(np.float32).itemsize  # frames are float32

    def push(self, frame: np.ndarray, probability: float, level: float) -> DecodeDue | None:
        """Take one frame; the decode it makes due, if any."""
        frame_start = self._timeline_samples
        self._timeline_samples += frame.size
        event = self._endpointer.push(probability, level)
        self._snr.update(probability, level)
        buffer = self._buffer
        if not buffer.is_open:
            if event is not FrameEvent.SPEECH_START:
                buffer.idle_frame(frame, probability)
                return None
            # Without an estimate yet, the longer pre-roll until the first decode settles it.
            self._unsettled_preroll = self._snr.db is None
            buffer.open(frame_start, opening_preroll_frames(self._config.preroll_sec, self._snr.db))
            self._open_from_sample = buffer.start_sample
            self._boundaries.append(SpeechBoundary("started", self.utterance_index, _seconds(frame_start)))
            self._speech_frames = 0
            self._samples_at_last_partial = 0
            self._samples_at_onset = buffer.samples
        buffer.append(frame, probability)
        if self._endpointer.in_speech and self._endpointer.trailing_silence_frames == 0:
            self._speech_frames += 1
            self.speech_frames_total += 1
            buffer.last_speech_end_sample = self._timeline_samples
        if event is FrameEvent.SPEECH_END and self._config.emit_final_on_vad:
            return self.finish()
        cap = self._config.cap_samples
        if cap and buffer.samples >= cap:
            self._settle_preroll()  # the cap counts no pre-roll that is about to go
            if buffer.samples >= cap:
                return self._cut_at_cap()
        if self._speculate_at_silence_frames and (
                self._endpointer.trailing_silence_frames == self._speculate_at_silence_frames):
            return self._speculative_partial()
        return self._partial_if_due()

    def finish(self) -> FinalDue | None:
        """Close the open utterance: its final, if it held enough speech."""
        buffer = self._buffer
        if not buffer.is_open:
            return None
        due = None
        self._settle_preroll()
        self._boundaries.append(SpeechBoundary("ended", self.utterance_index,
                                               _seconds(max(buffer.last_speech_end_sample, buffer.start_sample))))
        if self._speech_frames >= self._min_speech_frames:
            end = self._final_end_sample()
            same = end == self._speculated_end_sample and self._speech_frames == self._speech_frames_at_last_partial
            due = self._final(buffer.audio(end_sample=end), buffer.start_sample, buffer.last_speech_end_sample,
                              same_as_partial=same)
        speech_end = buffer.last_speech_end_sample + self._tail_samples
        self._resume_floor_sample = min(-(-speech_end // FRAME_SAMPLES) * FRAME_SAMPLES, self._timeline_samples)
        buffer.close()
        self._after_overlap = False
        self._continues_speech = False
        return due

    def _cut_at_cap(self) -> FinalDue | None:
        """The utterance reached the buffer cap: cut it in its quietest recent frame.

        The part before the cut gets its final; `overlap_sec` of audio before the cut plus
        everything after it starts the next utterance (the transcriber removes the overlap's
        words from the next result).
        """
        had_speech = self._speech_frames >= self._min_speech_frames
        overlap_frames = round(self._config.overlap_sec / FRAME_SEC) if had_speech else 0
        head, cut_sample, after_cut_probs = self._buffer.split_at_quietest(
            search_frames=cut_search_frames(self._config.cap_samples or 0), overlap_frames=overlap_frames)
        due = self._final(head, cut_sample - head.size, cut_sample) if had_speech else None
        self._open_from_sample = cut_sample
        self._after_overlap = overlap_frames > 0
        self._continues_speech = had_speech
        threshold = self._config.endpoint.threshold
        self._speech_frames = sum(p >= threshold for p in after_cut_probs)
        self._samples_at_last_partial = 0
        self._samples_at_onset = self._buffer.samples - len(after_cut_probs) * FRAME_SAMPLES
        return due

    def _settle_preroll(self) -> None:
        """At the open utterance's first decode: drop the longer pre-roll it opened with unless the
        SNR estimate now reads noise (appliance.streaming.preroll)."""
        if self._unsettled_preroll:
            self._unsettled_preroll = False
            drop = preroll_to_drop(self._config.preroll_sec, self._snr.db, self._samples_at_onset // FRAME_SAMPLES)
            self._buffer.drop_head(drop)
            self._open_from_sample = self._buffer.start_sample
            self._samples_at_onset -= drop * FRAME_SAMPLES

    def _in_noise(self) -> bool:
        snr_db = self._snr.db
        return snr_db is not None and snr_db < NOISY_BELOW_DB

    def _final_end_sample(self) -> int:
        return min(self._buffer.last_speech_end_sample + self._tail_samples, self._timeline_samples)

    def _final(self, audio: np.ndarray, start_sample: int, end_sample: int, *, same_as_partial: bool = False
               ) -> FinalDue:
        due = FinalDue(self.utterance_index, audio, _seconds(start_sample), _seconds(end_sample),
                       self._after_overlap, self._continues_speech, self._in_noise(), same_as_partial=same_as_partial,
                       own_start_sec=_seconds(self.resume_sample))
        self.utterance_index += 1
        self._speech_frames_at_last_partial = -1
        self._speculated_end_sample = -1
        return due

    def _speculative_partial(self) -> PartialDue | None:
        """Silence has lasted `tail_sec`: the audio up to here is exactly what the final will decode
        if no more speech comes, so a partial of it now lets the final reuse its hypothesis at the
        endpoint instead of decoding again. Skipped when this audio was already speculated on, a
        partial of this stream is waiting for a slot, or (`auto`) the decoders have no room for it."""
        buffer = self._buffer
        end = self._final_end_sample()
        if (self._speech_frames < self._min_speech_frames or self._backlog.partial_waiting
                or end == self._speculated_end_sample
                or (self._config.speculation == "auto" and not self._backlog.decode_room)):
            return None
        self._settle_preroll()
        self._samples_at_last_partial = buffer.samples
        self._speech_frames_at_last_partial = self._speech_frames
        self._speculated_end_sample = end
        return PartialDue(self.utterance_index, buffer.audio(end_sample=end), _seconds(buffer.start_sample),
                          _seconds(end), self._after_overlap, self._continues_speech, self._in_noise(),
                          speculative=True)

    def _partial_if_due(self) -> PartialDue | None:
        cadence = self._config.cadence
        if cadence is None:
            return None
        buffer = self._buffer
        first = self._samples_at_last_partial == 0
        since = self._samples_at_onset if first else self._samples_at_last_partial
        grown_sec = _seconds(buffer.samples - since)
        if grown_sec < (cadence.first_sec if first else cadence.fastest_sec):
            return None  # not due even at the fastest cadence: the load need not be read
        if self._backlog.partial_waiting or self._speech_frames < self._min_speech_frames:
            return None
        if 0 < self._endpointer.trailing_silence_frames < self._speculate_at_silence_frames:
            return None  # a pause began: the speculative partial, due in a moment, will cover it
        demand = self._backlog.decode_demand
        if grown_sec < (cadence.first_after_sec(demand) if first else cadence.interval_sec(demand)):
            return None
        self._settle_preroll()
        self._samples_at_last_partial = buffer.samples
        if self._config.partial_skip_unchanged and self._speech_frames == self._speech_frames_at_last_partial:
            return None  # only silence since the last partial: its text cannot have changed
        self._speech_frames_at_last_partial = self._speech_frames
        return PartialDue(self.utterance_index, buffer.audio(), _seconds(buffer.start_sample),
                          _seconds(self._timeline_samples), self._after_overlap, self._continues_speech,
                          self._in_noise())
