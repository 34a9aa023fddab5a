"""The speech corpus in ../shared/audio and WER helpers, shared by tests and benchmarks.

A fresh clone elsewhere has no ../shared: `english_corpus()` then returns an empty list and callers
skip. WER normalises both sides with Whisper's English normaliser, so "ten" and "10" agree.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"


@dataclass(frozen=True)
class Recording:
    path: Path
    language: str
    duration_sec: float
    reference: str


def corpus(audio_dir: Path = SHARED_AUDIO) -> list[Recording]:
    manifest = audio_dir / "manifest.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Recording(audio_dir / r["file"], r["language"], float(r["duration_s"]), r["reference_text"])
            for r in rows]


def english_corpus(audio_dir: Path = SHARED_AUDIO) -> list[Recording]:
    return [r for r in corpus(audio_dir) if r.language == "en"]


@lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


_DIGIT = re.compile(r"\d")
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalize(text: str) -> str:
    """Whisper's English normaliser, then every digit spelled as its own word.

    The normaliser turns spelled "one two three" into "123" but "1, 2, 3" into "one 2 3", so the
    same three words would count as three errors against a one-word reference. Spelling digits one
    by one makes number formatting irrelevant on both sides ("10" and "ten" are both "one zero")."""
    spelled = _DIGIT.sub(lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", _normalizer()(text))
    return " ".join(spelled.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count) after normalisation."""
    import jiwer

    ref = normalize(reference)
    hyp = normalize(hypothesis)
    n = len(ref.split())
    if not hyp.strip():
        return n, n
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, n


def wer(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / max(1, n)


@lru_cache(maxsize=2)
def _offline_model(model: str, model_dir: str | None, device: str, compute_type: str):
    from faster_whisper import WhisperModel

    from appliance.models.store import resolve_model

    return WhisperModel(str(resolve_model(model, model_dir).path), device=device, compute_type=compute_type)


def offline_transcribe(path: Path, profile: str = "realtime", compute_type: str = "float32", *,
                       model: str = "tiny.en", model_dir: str | None = None, device: str = "cpu",
                       language: str | None = "en") -> str:
    """Plain offline faster-whisper on the whole file with the given model and decode profile."""
    import numpy as np
    import soundfile as sf

    from appliance.config import default_config_paths, load_config

    options = load_config(*default_config_paths()).decode_profiles[profile]
    audio, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate_hz != 16_000:
        import soxr

        audio = soxr.resample(audio, rate_hz, 16_000).astype(np.float32)
    segments, _ = _offline_model(model, model_dir, device, compute_type).transcribe(
        audio, language=language, vad_filter=False, **options.as_kwargs())
    return " ".join(s.text.strip() for s in segments)
