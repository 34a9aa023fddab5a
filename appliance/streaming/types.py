"""Transport-neutral messages of a stream: audio in, results out."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.streaming.word_timing import Word


@dataclass(frozen=True)
class AudioIn:
    session_id: str
    pcm16: bytes
    sample_rate_hz: int  # 0 = server.sample_rate
    session_token: str = ""


@dataclass(frozen=True)
class RecognitionResult:
    session_id: str
    utterance_index: int
    is_final: bool
    text: str
    committed_text: str
    unstable_text: str
    start_sec: float
    end_sec: float
    language: str
    language_probability: float
    decode_latency_sec: float
    model_id: str
    partials_dropped: int = 0  # partial decodes of this utterance skipped under load
    queued_to_sent_sec: float = 0.0  # from the decode being queued (for a final: the utterance ending) to this result
    decoded_audio_sec: float = 0.0  # audio the decode covered (for the real-time factor)
    speech_event: str = ""  # "started" / "ended" on a speech event (no text, not final); "" on results
    words: tuple[Word, ...] = ()  # finals of sessions with word_timestamps=true: one per word of `text`
    confidence: float = 0.0  # the decoder's, 0-1, for the decode that produced this result's text
    resume_token: str = ""  # finals and checkpoints: the ticket a dropped stream re-attaches with
    resume_from_sec: float = 0.0  # ... and where in the timeline its client resends audio from

    @property
    def is_checkpoint(self) -> bool:
        """A resumable session's checkpoint: no text, only a fresh resume ticket."""
        return bool(self.resume_token) and not self.is_final


@dataclass(frozen=True)
class StreamLimits:
    """Per-stream limits and cadences, resolved from AppConfig once."""

    session_timeout_sec: float = 60.0
    max_chunk_ms: float | None = 2000.0
    default_sample_rate_hz: int = 16_000
    max_buffer_sec: float | None = 20.0
    max_buffer_bytes: int | None = None
    buffer_overlap_sec: float = 0.5
    partial_interval_sec: float | None = 0.5  # with spare decode capacity (None: no partials)
    partial_interval_max_sec: float | None = 3.0  # at full decode demand (None: a fixed cadence)
    partial_first_sec: float | None = 0.5  # after an utterance's onset (None: the interval)
    partial_window_sec: float = 10.0
    speech_rms_threshold: float = 0.0
    max_audio_sec_per_session: float | None = None
    max_batch_upload_bytes: int | None = None  # upload_mode=batch: audio bytes per session
    max_chunks_per_sec: float = 0.0  # chunk messages per stream, 2 s burst (0: no limit)
    preroll_sec: float = 0.3  # audio kept before the first speech frame, so onsets are not clipped
    tail_sec: float = 0.25  # silence kept after the last speech frame: Whisper ends words better
    min_speech_sec: float = 0.1
    max_pending_per_stream: int = 8  # decodes queued per stream before partials drop and reading pauses
    partial_skip_unchanged: bool = True
    speculative_finals: str = "auto"  # finals-only sessions: always, never, auto (while a decode slot is idle)
