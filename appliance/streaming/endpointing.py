"""Utterance endpointing from per-frame VAD probabilities and RMS.

Pure logic over 32 ms frames, no I/O, so it is tested frame by frame. Speech starts on a frame whose
probability >= `threshold` and whose RMS >= `speech_rms_threshold`; it continues while frames stay
above a lower release threshold (hysteresis, as Silero's own iterator does), and the utterance ends
after `silence_sec` of trailing non-speech. (Whether an utterance held enough speech to decode is
the segmenter's call: it counts speech frames per utterance, across buffer-cap cuts.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from appliance.vad import FRAME_SEC

# Speech, once started, continues while frames stay above threshold - RELEASE_MARGIN (0.20 at the
# default 0.5). In noise Silero's probability sags in the pauses inside a sentence; at a margin of
# 0.15 those pauses ended utterances, and decoding the fragments without their context cost 4 points
# of WER at 5 dB SNR (pink) against offline. 0.30 halved that gap and left clean speech as it was
# (bench/wer.py --noise pink --snr 5|10 and clean, docs/capacity.md).
RELEASE_MARGIN = 0.30


@dataclass(frozen=True)
class EndpointConfig:
    threshold: float = 0.5
    silence_sec: float = 0.5
    speech_rms_threshold: float = 0.0


class FrameEvent(Enum):
    NONE = "none"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


class Endpointer:
    """Tracks one stream's speech state, frame by frame."""

    def __init__(self, config: EndpointConfig):
        self.config = config
        self._release_threshold = max(0.01, config.threshold - RELEASE_MARGIN)
        self._silence_frames_needed = max(1, round(config.silence_sec / FRAME_SEC))
        self.in_speech = False
        self.trailing_silence_frames = 0

    def push(self, probability: float, frame_rms: float) -> FrameEvent:
        if not self.in_speech:
            if probability >= self.config.threshold and frame_rms >= self.config.speech_rms_threshold:
                self.in_speech = True
                self.trailing_silence_frames = 0
                return FrameEvent.SPEECH_START
            return FrameEvent.NONE
        if probability >= self._release_threshold:
            self.trailing_silence_frames = 0
            return FrameEvent.NONE
        self.trailing_silence_frames += 1
        if self.trailing_silence_frames >= self._silence_frames_needed:
            self.in_speech = False
            return FrameEvent.SPEECH_END
        return FrameEvent.NONE
