"""openai-whisper (PyTorch) backend: CPU here, CUDA or Apple MPS where present.

It runs the weights of the same CTranslate2 pack the faster-whisper backend loads, converted once
into an openai-whisper checkpoint in the model cache (appliance/models/convert.py), so it works
offline and both backends decode identical weights.

Concurrency: openai-whisper installs kv-cache hooks on the model for each decode, so one model
instance serves one call at a time; the backend keeps `pool_size` instances and hands each call a
free one (callers beyond that wait, though the scheduler never sends more than max_concurrency).

Decode options map onto `whisper.transcribe`. openai-whisper has no repetition_penalty or
no_repeat_ngram_size: values other than the neutral ones are logged once and not applied. hotwords
go into the prompt ahead of initial_prompt, where faster-whisper puts them. Word timings align the
decode's own segments afterwards (torch_words), so they never change the text. `encode_window` and
`second_look_below` are accepted for the common signature; openai-whisper's encoder always takes
the full 30 s window, so no final needs a second look on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from appliance.decode_options import DecodeOptions
from appliance.models.backends.base import WHISPER_MAX_PROMPT_TOKENS, Segment, Transcript, WordTiming
from appliance.models.backends.language_choice import allowed_languages, forced_language, most_probable
from appliance.models.backends.torch_words import EncoderTap, add_words
from appliance.models.store import ModelStoreError

log = logging.getLogger(__name__)

# Repetition-loop guard, as in the faster-whisper backend: fast speech is ~6 tokens/s.
MAX_TOKENS_PER_SEC = 15
MIN_TOKEN_BUDGET = 24
HALF_PRECISION = ("float16", "int8_float16")


WINDOW_TOKEN_LIMIT = 224  # openai-whisper's own per-window default (half the text context)


def token_budget(audio_sec: float) -> int:
    """Tokens one 30 s window may generate: enough for fast speech, never past Whisper's limit."""
    return min(WINDOW_TOKEN_LIMIT, max(MIN_TOKEN_BUDGET, int(audio_sec * MAX_TOKENS_PER_SEC)))


def pick_device(requested: str, cuda_available, mps_available) -> str:
    """`auto` -> cuda, else mps, else cpu; an explicit device that is absent is an error, not a fallback."""
    if requested == "auto":
        return "cuda" if cuda_available() else "mps" if mps_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        raise ModelStoreError("model.device is cuda but torch sees no CUDA device; use cpu or auto")
    if requested == "mps" and not mps_available():
        raise ModelStoreError("model.device is mps but torch has no MPS backend here; use cpu or auto")
    return requested


def _torch_devices():
    import torch

    def mps_available() -> bool:
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()

    return torch.cuda.is_available, mps_available


def transcribe_kwargs(options: DecodeOptions, *, fp16: bool, language: str | None, task: str,
                      audio_sec: float) -> dict:
    """`whisper.transcribe` keyword arguments for the appliance's decode options."""
    prompt = " ".join(p.strip() for p in (options.hotwords, options.initial_prompt) if p and p.strip()) or None
    beam = options.beam_size > 1
    return {
        "verbose": None,  # no printing, no progress bar
        "temperature": options.temperature,
        "compression_ratio_threshold": options.compression_ratio_threshold,
        "logprob_threshold": options.log_prob_threshold,
        "no_speech_threshold": options.no_speech_threshold,
        "condition_on_previous_text": False,  # never carry text across calls or silence
        "initial_prompt": prompt,
        # DecodingOptions: beam_size None means greedy (a beam of 1 would be a slower equivalent)
        "beam_size": options.beam_size if beam else None,
        "patience": options.patience if beam else None,
        "best_of": options.best_of,
        # faster-whisper's length_penalty 1.0 is plain length normalisation, openai-whisper's None
        "length_penalty": None if options.length_penalty == 1.0 else options.length_penalty,
        "without_timestamps": options.without_timestamps,
        # never openai-whisper's word mode, which decodes a short window's padding again (torch_words)
        "word_timestamps": False,
        "suppress_blank": options.suppress_blank,
        "sample_len": token_budget(audio_sec),
        "language": language,
        "task": task,
        "fp16": fp16,
    }


TORCH_WINDOW_FRAMES = 3000  # Whisper's 30 s of 10 ms mel frames


class TorchWhisperBackend:
    def __init__(self, *, model_id: str, model_path: str, device: str = "cpu", compute_type: str = "float32",
                 pool_size: int = 1, cpu_threads: int = 0, english_only: bool = False, encode_window: str = "full",
                 languages: tuple[str, ...] = (), second_look_below: float = 0.0):
        import torch
        import whisper

        from appliance.models.convert import torch_checkpoint

        self.model_id = model_id
        self.device = pick_device(device, *_torch_devices())
        self.max_concurrency = max(1, pool_size)
        self.max_batch_size = 1  # whisper.transcribe decodes one utterance per call
        self.english_only = english_only
        self.languages = allowed_languages(languages, english_only=english_only, model_id=model_id)
        self.max_prompt_tokens = WHISPER_MAX_PROMPT_TOKENS
        self.fp16 = self.device != "cpu" and compute_type in HALF_PRECISION
        if compute_type not in ("float32", "default") and not self.fp16:
            log.info("torch_whisper runs %s in float32 (compute_type %s is a CTranslate2 precision)",
                     self.device, compute_type)
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        checkpoint = str(torch_checkpoint(model_path))  # converted from the CT2 model on first use
        self._idle: queue.Queue = queue.Queue()
        for _ in range(self.max_concurrency):
            model = whisper.load_model(checkpoint, device=self.device)
            if self.fp16:
                model = model.half()
            model.eval()
            self._idle.put(model)
        preload_tokenizer(model)
        self._tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages)
        log.info("torch_whisper: %d instance(s) of %s on %s in %s", self.max_concurrency, checkpoint, self.device,
                 "float16" if self.fp16 else "float32")
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(" " + text.strip()))

    def _warn_unsupported(self, options: DecodeOptions) -> None:
        unsupported = {"repetition_penalty": options.repetition_penalty != 1.0,
                       "no_repeat_ngram_size": options.no_repeat_ngram_size != 0}
        with self._warn_lock:
            for name in [n for n, used in unsupported.items() if used and n not in self._warned]:
                self._warned.add(name)
                log.warning("torch_whisper has no %s; decoding without it", name)

    def window_frames(self, samples: int, provisional: bool = False) -> int:
        return TORCH_WINDOW_FRAMES  # whisper.transcribe pads every window to 30 s

    def wants_second_look(self, transcript: Transcript) -> bool:
        return False  # every decode is on the full window already

    def transcribe(self, audio: np.ndarray, options: DecodeOptions, *, language: str | None,
                   task: str, provisional: bool = False, second_look: bool = True) -> Transcript:
        import torch
        import whisper

        started = time.perf_counter()
        audio_sec = audio.size / 16_000
        self._warn_unsupported(options)
        model = self._idle.get()
        try:
            with torch.inference_mode():
                language, probability = self._language(model, audio, language)
                task = "transcribe" if self.english_only else task
                kwargs = transcribe_kwargs(options, fp16=self.fp16, language=language, task=task, audio_sec=audio_sec)
                with EncoderTap(model) as tap:
                    result = whisper.transcribe(model, np.ascontiguousarray(audio, dtype=np.float32), **kwargs)
                if options.word_timestamps:
                    add_words(model, tap, result, audio, language=language, task=task, fp16=self.fp16)
        finally:
            self._idle.put(model)
        segments = tuple(
            Segment(text=s["text"], start_sec=float(s["start"]), end_sec=float(s["end"]),
                    avg_logprob=float(s["avg_logprob"]), no_speech_prob=float(s["no_speech_prob"]),
                    compression_ratio=float(s["compression_ratio"]),
                    words=tuple(WordTiming(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                                for w in s.get("words") or ()))
            for s in result["segments"])
        return Transcript(segments=segments, language=result["language"], language_probability=probability,
                          audio_sec=audio_sec, decode_sec=time.perf_counter() - started,
                          extra={"encode_frames": TORCH_WINDOW_FRAMES})

    def transcribe_batch(self, audios: list[np.ndarray], options: DecodeOptions, *, language: str | None,
                         task: str, provisional: bool = False, second_look: bool = True) -> list[Transcript]:
        """One after another: openai-whisper has no batched decode (max_batch_size is 1, so the
        scheduler only gets here with a single utterance)."""
        return [self.transcribe(a, options, language=language, task=task, provisional=provisional) for a in audios]

    def _language(self, model, audio: np.ndarray, language: str | None) -> tuple[str, float]:
        """The language to decode in and its probability (1.0 when fixed rather than detected); a
        detected one is the most probable of model.languages (language_choice)."""
        import whisper

        if self.english_only or not model.is_multilingual:
            return "en", 1.0
        language = forced_language(language, self.languages)
        if language:
            return language, 1.0
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(np.asarray(audio, dtype=np.float32)),
                                          model.dims.n_mels).to(model.device)
        _, probs = model.detect_language(mel.half() if self.fp16 else mel)
        return most_probable(probs.items(), self.languages)


def preload_tokenizer(model) -> None:
    """Load the (cached) tiktoken vocabulary now rather than in the first decode.

    openai-whisper reads it with an unclosed open(); the ResourceWarning that leaves is harmless
    and silenced here, once, instead of surfacing at a random later garbage collection."""
    import warnings

    from whisper.tokenizer import get_encoding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        # keyword arguments, as get_tokenizer calls it: lru_cache keys positional and keyword calls apart
        get_encoding(name="multilingual" if model.is_multilingual else "gpt2", num_languages=model.num_languages)
