"""faster-whisper (CTranslate2) backend: CPU and CUDA.

Encode window: Whisper pads every input to 30 s of features, so a 2 s utterance pays for a 30 s
encoder pass. CTranslate2's encoder also takes shorter inputs; with `encode_window="bucketed"` (the
default) the features are cut to the smallest bucket that holds the utterance plus a margin. Buckets
(rather than exact lengths) keep the number of distinct shapes small. Short windows sometimes make
Whisper loop or return nothing, so each result is checked (window_check) and suspects are decoded
again on the next bucket up, then on the full window; a final the decoder is unsure of is decoded
again on the full window and the more confident reading kept (window_check). Measured with tiny.en,
streamed, pooled over the English corpus (bench/wer.py --fast): full 8.7%; buckets from 10 s with
the check 7.5% (offline 8.3%), ~5% of utterances redone. Buckets from 5 s loop or come back empty
on about half the short commands.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.models.backends.base import (
    WHISPER_MAX_PROMPT_TOKENS,
    Segment,
    Transcript,
    WordTiming,
    segments_confidence,
)
from appliance.models.backends.language_choice import allowed_languages, forced_language, most_probable
from appliance.models.backends.window_check import SECOND_LOOK_BELOW, window_suspect

FRAMES_PER_SEC = 100  # Whisper's mel hop: 10 ms
FULL_WINDOW_FRAMES = 3000
BUCKET_SEC = (10, 15, 20, 30)
BUCKET_MARGIN_SEC = 1.0
# Repetition-loop guard: fast speech is ~6 tokens/s; a decode that runs past this has looped, and
# letting it run to Whisper's 448-token limit costs seconds of CPU for text the filters then drop.
MAX_TOKENS_PER_SEC = 15
MIN_TOKEN_BUDGET = 24
# Per 30 s window: Whisper's text context is 448 tokens including the prompt, and faster-whisper
# raises on a larger max_new_tokens; 224 is openai-whisper's own sample length.
MAX_TOKEN_BUDGET = 224


def token_budget(audio_sec: float) -> int:
    return min(MAX_TOKEN_BUDGET, max(MIN_TOKEN_BUDGET, int(audio_sec * MAX_TOKENS_PER_SEC)))


def default_cpu_threads(pool_size: int = 1) -> int:
    """Threads per replica: the usable cores split over the pool. Two replicas of one thread held
    20 streams at p95 1.7-2.2 s on 2 cores where two of two threads (four OpenMP threads fighting
    over two cores) gave 2.2 s and one replica of two gave 5.3 s (bench/sweep.py)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, pool_size))


def encode_frames_for(audio_sec: float) -> int:
    """The bucketed feature length (frames) for an utterance of `audio_sec` seconds."""
    needed = audio_sec + BUCKET_MARGIN_SEC
    for bucket in BUCKET_SEC:
        if needed <= bucket:
            return bucket * FRAMES_PER_SEC
    return FULL_WINDOW_FRAMES


def retry_frames(frames: int) -> int:
    """The window a suspect result of a `frames` window is decoded again on: the next bucket up
    (15 s did not loop on the corpus where 10 s did, at a quarter of the 30 s encoder cost), and
    the full window after that."""
    return next((b * FRAMES_PER_SEC for b in BUCKET_SEC if b * FRAMES_PER_SEC > frames), FULL_WINDOW_FRAMES)


def _fallbacks(earlier: Transcript, reason: str) -> str:
    """`earlier`'s reasons for a larger window (TranscriptExtra.window_fallback), then `reason`."""
    before = earlier.extra.get("window_fallback")
    return f"{before}, {reason}" if before else reason


def limit_numpy_blas_threads() -> None:
    """Run numpy's BLAS on the calling thread only. Its one job here is the mel filter-bank product
    (80 x 201 by the frames) of each decode, a few milliseconds; OpenBLAS hands it to worker threads
    that then spin-wait on the cores CTranslate2 decodes on. One thread took the server's CPU from
    ~100% to ~85% of two cores at 16 streams and p95 final latency from ~1.5 s to ~1.25 s
    (bench/sweep.py, 2-core box)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _bucketed_model_class():
    from faster_whisper import WhisperModel

    class BucketedWhisperModel(WhisperModel):
        """WhisperModel whose encoder sees only the bucket of features the current call asked for,
        and whose language detection keeps to model.languages."""

        allowed_languages: tuple[str, ...] = ()  # () = any (language_choice)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.call_state = threading.local()  # per-thread: pool_size calls run concurrently

        def encode(self, features: np.ndarray):
            frames = getattr(self.call_state, "encode_frames", None)
            if frames is not None and features.shape[-1] > frames:
                features = np.ascontiguousarray(features[..., :frames])
            encoded = super().encode(features)
            self.call_state.encoded = encoded  # the window being decoded, for word alignment
            return encoded

        def detect_language(self, *args, **kwargs):
            language, probability, scores = super().detect_language(*args, **kwargs)
            if self.allowed_languages and language not in self.allowed_languages and scores:
                language, probability = most_probable(scores, self.allowed_languages)
            return language, probability, scores

    return BucketedWhisperModel


# A second look holds its decode slot for a full-window decode per final (~0.4 s int8 on one thread).
# One per call bounds that when a batch of unsure finals ends just before a burst: the sync harness
# in babble 10 dB at 48 streams read p95 1.46 -> 2.51 s looking at every unsure final of a batch,
# 1.35 -> 1.74 s looking at one (docs/capacity.md). A lone final, the light-load case, always gets it.
SECOND_LOOKS_PER_CALL = 1
MAX_BATCH_SIZE = 64  # one CTranslate2 generate() call; the scheduler's own cap is far lower
# On a CPU a batch shares the decoder's token steps but not the encoder, which is most of a short
# utterance's cost: per utterance a batch costs 0.171 s alone, 0.136 s in 2, 0.113 s in 4 and no
# less in 5 to 8 (tiny.en int8, one thread, the 5-7 s sentences: bench/batch_curve.py). Past 4 a
# batch only makes its first results later, so the scheduler takes at most 4 on a CPU.
CPU_BATCH_SIZE = 4


class FasterWhisperBackend:
    def __init__(self, *, model_id: str, model_path: str, device: str = "cpu", compute_type: str = "float32",
                 pool_size: int = 1, cpu_threads: int = 0, english_only: bool = False,
                 encode_window: str = "full", languages: tuple[str, ...] = (),
                 second_look_below: float = SECOND_LOOK_BELOW):
        self.model_id = model_id
        self.device = device
        self.max_concurrency = max(1, pool_size)
        self.max_batch_size = CPU_BATCH_SIZE if device == "cpu" else MAX_BATCH_SIZE
        self.english_only = english_only
        self.languages = allowed_languages(languages, english_only=english_only, model_id=model_id)
        self.max_prompt_tokens = WHISPER_MAX_PROMPT_TOKENS
        self.encode_window = encode_window
        self.second_look_below = second_look_below
        limit_numpy_blas_threads()
        # num_workers = pool size: CTranslate2 keeps that many model replicas, so that many
        # transcribe() calls can run at once from different threads.
        self._model = _bucketed_model_class()(
            model_path, device=device, compute_type=compute_type, num_workers=self.max_concurrency,
            cpu_threads=cpu_threads or default_cpu_threads(self.max_concurrency), local_files_only=True,
        )
        self._model.allowed_languages = self.languages
        self._is_word = functools.lru_cache(maxsize=None)(self._token_is_word)
        self._eot = self._model.hf_tokenizer.token_to_id("<|endoftext|>")

    def count_tokens(self, text: str) -> int:
        return len(self._model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def window_frames(self, samples: int, provisional: bool = False) -> int:
        bucketed = self.encode_window == "bucketed" or (self.encode_window == "partials" and provisional)
        return encode_frames_for(samples / 16_000) if bucketed else FULL_WINDOW_FRAMES

    def transcribe(self, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                   task: str, provisional: bool = False, second_look: bool = True) -> Transcript:
        started = time.perf_counter()
        frames = self.window_frames(audio.size, provisional)
        [transcript] = self._with_retries(
            [audio], frames, lambda batch, f: [self._transcribe_once(batch[0], options, language, task, f)],
            second_look=second_look and not provisional)
        return dataclasses.replace(transcript, decode_sec=time.perf_counter() - started)

    def transcribe_batch(self, audios: list[np.ndarray], options: DecodeOptions, *, language: str | None,
                         task: str, provisional: bool = False, second_look: bool = True) -> list[Transcript]:
        """Decode several utterances in one CTranslate2 call (see ct2_batch); word timings too."""
        from appliance.models.backends.ct2_batch import transcribe_batch

        def decode(batch: list[np.ndarray], frames: int) -> list[Transcript]:
            return transcribe_batch(self._model, batch, options,
                                    language=None if self.english_only else forced_language(language, self.languages),
                                    languages=self.languages, task="transcribe" if self.english_only else task,
                                    encode_frames=frames,
                                    max_new_tokens=token_budget(max(a.size for a in batch) / 16_000))

        frames = self.window_frames(max(a.size for a in audios), provisional)
        return self._with_retries(audios, frames, decode, second_look=second_look and not provisional)

    def wants_second_look(self, transcript: Transcript) -> bool:
        """A final decoded on a short window, which the decoder is unsure of (SECOND_LOOK_BELOW)."""
        return (transcript.extra.get("encode_frames", FULL_WINDOW_FRAMES) < FULL_WINDOW_FRAMES
                and segments_confidence(transcript.segments) < self.second_look_below)

    def _with_retries(self, audios: list[np.ndarray], frames: int,
                      decode: Callable[[list[np.ndarray], int], list[Transcript]], *,
                      second_look: bool) -> list[Transcript]:
        """`decode(audios, frames)`, then the suspects of a short window (window_check) again,
        together, on the next window up (retry_frames) until none is left or the window is full;
        then, with `second_look` (finals, where the box has room), a second look at those the
        decoder is unsure of."""
        transcripts = decode(audios, frames)
        budget = token_budget(max(a.size for a in audios) / 16_000)
        pending = list(range(len(audios)))
        while frames < FULL_WINDOW_FRAMES:
            suspects = {i: reason for i in pending if (reason := window_suspect(
                transcripts[i].extra["tokens"], token_budget=budget, is_word=self._is_word))}
            if not suspects:
                break
            frames = retry_frames(frames)
            redone = decode([audios[i] for i in suspects], frames)
            for (i, reason), transcript in zip(suspects.items(), redone, strict=True):
                transcript.extra["window_fallback"] = _fallbacks(transcripts[i], reason)
                transcripts[i] = transcript
            pending = list(suspects)
        return self._second_look(audios, transcripts, decode) if second_look else transcripts

    def _second_look(self, audios: list[np.ndarray], transcripts: list[Transcript],
                     decode: Callable[[list[np.ndarray], int], list[Transcript]]) -> list[Transcript]:
        """The least sure final of the call (SECOND_LOOKS_PER_CALL) decoded again on the full
        window; it keeps the more confident of its two readings (a tie keeps the short window's)."""
        unsure = sorted((i for i, transcript in enumerate(transcripts) if self.wants_second_look(transcript)),
                        key=lambda i: segments_confidence(transcripts[i].segments))[:SECOND_LOOKS_PER_CALL]
        if not unsure:
            return transcripts
        kept = list(transcripts)
        for i, again in zip(unsure, decode([audios[i] for i in unsure], FULL_WINDOW_FRAMES), strict=True):
            first = transcripts[i]
            before, after = segments_confidence(first.segments), segments_confidence(again.segments)
            winner = again if after > before else first
            winner.extra["window_fallback"] = _fallbacks(first, f"unsure {before:.2f}, full window {after:.2f}")
            kept[i] = winner
        return kept

    def _transcribe_once(self, audio: np.ndarray, options: DecodeOptions, language: str | None, task: str,
                         frames: int) -> Transcript:
        """faster-whisper's own path (temperature fallback included) on a `frames` window; word
        timings, when asked for, by aligning each window's tokens against that window's encoding
        (ct2_words), never through faster-whisper's word mode, which decodes the padding again."""
        audio_sec = audio.size / 16_000
        task = "transcribe" if self.english_only else task
        state = self._model.call_state
        state.encode_frames = frames if frames < FULL_WINDOW_FRAMES else None
        windows: list[tuple[object, list]] = []  # (encoder output, its segments), in order
        try:
            segments, info = self._model.transcribe(
                audio,
                language="en" if self.english_only else forced_language(language, self.languages),
                task=task,
                vad_filter=False,  # the appliance already gated this audio with its own VAD
                condition_on_previous_text=False,  # never carry text across calls or silence
                max_new_tokens=token_budget(audio_sec),
                **dataclasses.replace(options, word_timestamps=False).as_kwargs(),
            )
            for segment in segments:  # lazily decoded: state.encoded is this segment's window
                if not windows or windows[-1][1][0].seek != segment.seek:
                    windows.append((state.encoded, []))
                windows[-1][1].append(segment)
        finally:
            state.encode_frames = state.encoded = None
        words = self._words(windows, audio.size, task, info.language) if options.word_timestamps else {}
        decoded = tuple(
            Segment(text=s.text, start_sec=s.start, end_sec=s.end, avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob, compression_ratio=s.compression_ratio,
                    words=words.get(id(s), ()))
            for _, window in windows for s in window
        )
        tokens = [t for _, window in windows for s in window for t in s.tokens if t < self._eot]
        return Transcript(segments=decoded, language=info.language,
                          language_probability=float(info.language_probability), audio_sec=audio_sec,
                          extra={"encode_frames": frames, "tokens": tokens})

    def _words(self, windows: list[tuple[object, list]], audio_samples: int, task: str, language: str
               ) -> dict[int, tuple[WordTiming, ...]]:
        """Each decoded segment's words (keyed by id), one alignment per encoder window."""
        from faster_whisper.tokenizer import Tokenizer

        from appliance.models.backends.ct2_words import AlignWindow, TokenSegment, align_windows, content_frames

        tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task=task,
                              language=language)
        words: dict[int, tuple[WordTiming, ...]] = {}
        last_speech_sec = 0.0
        for encoded, segments in windows:
            seek = segments[0].seek
            window = AlignWindow([TokenSegment(list(s.tokens), s.start, s.end) for s in segments],
                                 num_frames=min(FULL_WINDOW_FRAMES, content_frames(audio_samples) - seek),
                                 offset_sec=seek / FRAMES_PER_SEC, last_speech_sec=last_speech_sec)
            [aligned] = align_windows(self._model, tokenizer, encoded, [window])
            for segment, segment_words in zip(segments, aligned, strict=True):
                words[id(segment)] = segment_words
                last_speech_sec = segment_words[-1].end_sec if segment_words else last_speech_sec
        return words

    def _token_is_word(self, token: int) -> bool:
        return any(ch.isalnum() for ch in self._model.hf_tokenizer.decode([token]))
