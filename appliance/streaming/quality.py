"""Turns a backend transcript into text a user should see, dropping what Whisper invents.

Whisper fills silence and noise with plausible text ("Thanks for watching.") and loops on repeats.
The VAD/RMS gate stops most of it before decoding; these filters catch what passes: segments the
model itself marks as no-speech with low confidence, segments whose text compresses too well
(repetition), and repetition loops inside the text.
"""

from __future__ import annotations

import math

from appliance.decode_options import DecodeOptions
from appliance.models.backends import Segment, Transcript
from appliance.streaming.commit import collapse_repeats


def is_hallucination(segment: Segment, options: DecodeOptions) -> bool:
    silent = options.no_speech_threshold is not None and segment.no_speech_prob > options.no_speech_threshold
    unsure = options.log_prob_threshold is None or segment.avg_logprob < options.log_prob_threshold
    if silent and unsure:
        return True
    ratio = options.compression_ratio_threshold
    return ratio is not None and segment.compression_ratio > ratio


def kept_segments(transcript: Transcript, options: DecodeOptions) -> list[Segment]:
    return [s for s in transcript.segments if not is_hallucination(s, options)]


def transcript_confidence(transcript: Transcript, options: DecodeOptions) -> float:
    """The decoder's confidence in the kept text, 0-1: exp of the segments' mean token log-probability,
    each segment weighted by its length in characters. 0 when nothing was kept."""
    kept = [(len(s.text.strip()), s.avg_logprob) for s in kept_segments(transcript, options) if s.text.strip()]
    total = sum(length for length, _ in kept)
    if not total:
        return 0.0
    return min(1.0, math.exp(sum(length * logprob for length, logprob in kept) / total))


def transcript_text(transcript: Transcript, options: DecodeOptions) -> str:
    kept = [s.text.strip() for s in kept_segments(transcript, options)]
    return collapse_repeats(" ".join(t for t in kept if t))
