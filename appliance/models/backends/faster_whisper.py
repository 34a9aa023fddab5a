"""faster-whisper (CTranslate2) backend: CPU and CUDA."""

from __future__ import annotations

import os
import time

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.models.backends.base import Segment, Transcript


def default_cpu_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class FasterWhisperBackend:
    def __init__(self, *, model_id: str, model_path: str, device: str = "cpu", compute_type: str = "int8",
                 pool_size: int = 1, cpu_threads: int = 0, english_only: bool = False):
        from faster_whisper import WhisperModel

        self.model_id = model_id
        self.device = device
        self.max_concurrency = max(1, pool_size)
        self.english_only = english_only
        # num_workers = pool size: CTranslate2 keeps that many model replicas, so that many
        # transcribe() calls can run at once from different threads.
        self._model = WhisperModel(
            model_path, device=device, compute_type=compute_type, num_workers=self.max_concurrency,
            cpu_threads=cpu_threads or default_cpu_threads(), local_files_only=True,
        )

    def transcribe(self, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                   task: str) -> Transcript:
        started = time.perf_counter()
        kwargs = options.as_kwargs()
        segments, info = self._model.transcribe(
            audio,
            language="en" if self.english_only else (language or None),
            task="transcribe" if self.english_only else task,
            vad_filter=False,  # the appliance already gated this audio with its own VAD
            condition_on_previous_text=False,  # never carry text across calls or silence
            **kwargs,
        )
        decoded = tuple(
            Segment(text=s.text, start_sec=s.start, end_sec=s.end, avg_logprob=s.avg_logprob,
                    no_speech_prob=s.no_speech_prob, compression_ratio=s.compression_ratio)
            for s in segments
        )
        return Transcript(segments=decoded, language=info.language,
                          language_probability=float(info.language_probability),
                          audio_sec=audio.size / 16_000, decode_sec=time.perf_counter() - started)
