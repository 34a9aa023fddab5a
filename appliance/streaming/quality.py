"""Turns a backend transcript into text a user should see, dropping what Whisper invents.

Whisper fills silence and noise with plausible text ("Thanks for watching.") and loops on repeats.
The VAD/RMS gate stops most of it before decoding; these filters catch what passes: segments the
model itself marks as no-speech with low confidence, segments whose text compresses too well
(repetition), and repetition loops inside the text.
"""

from __future__ import annotations

from appliance.decode_options import DecodeOptions
from appliance.models.backends import Segment, Transcript
from appliance.models.backends.base import segments_confidence
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
    """The decoder's confidence in the kept text (segments_confidence); 0 when nothing was kept."""
    return segments_confidence(kept_segments(transcript, options))


def transcript_text(transcript: Transcript, options: DecodeOptions) -> str:
    kept = [s.text.strip() for s in kept_segments(transcript, options)]
    return collapse_repeats(" ".join(t for t in kept if t))
