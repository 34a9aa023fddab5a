"""Word timings for the CTranslate2 backend, by alignment: a decode's own tokens are aligned against
the encoder output of the window they were decoded on (CTranslate2 Whisper `align`: cross-attention
of the alignment heads, a median filter, dynamic time warping), the way faster-whisper's own
`word_timestamps` do it, minus its second decode.

faster-whisper's word-timestamp mode also moves the next window to the last word's end, so a
final shorter than the window is decoded again on its padding, where Whisper invents text
("Thank you.", "This is the first one."): the words changed the transcript and cost ~1.5 s a final.
Here the decode runs exactly as a plain one would and the alignment reads its tokens, so a
word-timed final has the text of the same final without words, by construction.

The heuristics on the aligned words are faster-whisper's (`add_word_timestamps`): words at a
sentence boundary capped at twice the median word length, punctuation merged into its word, the
first words after a pause and the segment edges trimmed. Each window starts its own timeline, so
utterances aligned in one batched call do not lean on each other's last word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance.models.backends.base import WordTiming

# faster-whisper's (and openai-whisper's) defaults for word_timestamps
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_WORD_SEC = 0.7
MEDIAN_FILTER_WIDTH = 7
SAMPLES_PER_FRAME = 160  # Whisper's mel hop at 16 kHz


def content_frames(audio_samples: int) -> int:
    """Mel frames that hold audio (faster-whisper's `content_frames`), not the window's padding."""
    return audio_samples // SAMPLES_PER_FRAME


@dataclass(frozen=True)
class TokenSegment:
    """One decoded segment: its text tokens (no special tokens) and its times in the decoded audio."""

    tokens: list[int]
    start_sec: float
    end_sec: float


@dataclass(frozen=True)
class AlignWindow:
    """The segments decoded from one encoder window, the audio frames it held, where it starts."""

    segments: Sequence[TokenSegment]
    num_frames: int
    offset_sec: float = 0.0
    last_speech_sec: float = 0.0  # where speech last ended before this window (0 for an utterance's first)


def align_windows(model, tokenizer, encoder_output, windows: Sequence[AlignWindow]
                  ) -> list[list[tuple[WordTiming, ...]]]:
    """Per window (one per batch item of `encoder_output`), per segment: its words, times in seconds
    from the start of the decoded audio. `model` is a faster-whisper WhisperModel."""
    per_segment = [[[t for t in s.tokens if t < tokenizer.eot] for s in w.segments] for w in windows]
    tokens = [[t for segment in window for t in segment] for window in per_segment]
    if not any(tokens):
        return [[() for _ in w.segments] for w in windows]
    alignments = model.find_alignment(tokenizer, tokens, encoder_output, [max(1, w.num_frames) for w in windows],
                                      median_filter_width=MEDIAN_FILTER_WIDTH)
    return [_window_words(window, [len(s) for s in segments], alignment)
            for window, segments, alignment in zip(windows, per_segment, alignments, strict=True)]


def _window_words(window: AlignWindow, token_counts: list[int], alignment: list[dict]
                  ) -> list[tuple[WordTiming, ...]]:
    median_sec, max_sec = _median_and_max(alignment)
    _cap_sentence_boundaries(alignment, max_sec)
    from faster_whisper.transcribe import merge_punctuations

    merge_punctuations(alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
    out: list[tuple[WordTiming, ...]] = []
    index = 0
    last_speech_sec = window.last_speech_sec
    for segment, wanted in zip(window.segments, token_counts, strict=True):
        words: list[dict] = []
        saved_tokens = 0
        while index < len(alignment) and saved_tokens < wanted:
            timing = alignment[index]
            if timing["word"]:
                words.append({"word": timing["word"], "start": round(window.offset_sec + timing["start"], 2),
                              "end": round(window.offset_sec + timing["end"], 2),
                              "probability": timing["probability"]})
            saved_tokens += len(timing["tokens"])
            index += 1
        if words:
            last_speech_sec = _trim_edges(words, segment, median_sec, max_sec, last_speech_sec)
        out.append(tuple(WordTiming(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                         for w in words))
    return out


def _median_and_max(alignment: list[dict]) -> tuple[float, float]:
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(MAX_MEDIAN_WORD_SEC, float(np.median(durations))) if len(durations) else 0.0
    return median, median * 2


def _cap_sentence_boundaries(alignment: list[dict], max_sec: float) -> None:
    """faster-whisper's hack: a word at a sentence boundary is no longer than twice the median."""
    if max_sec <= 0:
        return
    for i in range(1, len(alignment)):
        if alignment[i]["end"] - alignment[i]["start"] > max_sec:
            if alignment[i]["word"] in SENTENCE_END_MARKS:
                alignment[i]["end"] = alignment[i]["start"] + max_sec
            elif alignment[i - 1]["word"] in SENTENCE_END_MARKS:
                alignment[i]["start"] = alignment[i]["end"] - max_sec


def _trim_edges(words: list[dict], segment: TokenSegment, median_sec: float, max_sec: float,
                last_speech_sec: float) -> float:
    """faster-whisper's hacks at a segment's edges: the first words after a pause are no longer than
    twice the median, and a first or last word that runs half a second past the segment's own
    timestamp is pulled back to it. Returns where this segment's speech ends (the next one's pause
    check reads it): the segment's end where the last word was pulled back, else the last word's."""
    if words[0]["end"] - last_speech_sec > median_sec * 4 and (
            words[0]["end"] - words[0]["start"] > max_sec
            or (len(words) > 1 and words[1]["end"] - words[0]["start"] > max_sec * 2)):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_sec:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - max_sec)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - max_sec)
    if segment.start_sec < words[0]["end"] and segment.start_sec - 0.5 > words[0]["start"]:
        words[0]["start"] = max(0, min(words[0]["end"] - median_sec, segment.start_sec))
    if segment.end_sec > words[-1]["start"] and segment.end_sec + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median_sec, segment.end_sec)
        return segment.end_sec
    return words[-1]["end"]
