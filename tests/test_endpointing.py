"""Endpointer: speech start/end from per-frame VAD probabilities and RMS, frame by frame."""

from __future__ import annotations

import pytest

from appliance.streaming.endpointing import RELEASE_MARGIN, EndpointConfig, Endpointer, FrameEvent
from appliance.vad import FRAME_SEC

LOUD = 0.1  # frame RMS well above any speech_rms_threshold used here
NONE, START, END = FrameEvent.NONE, FrameEvent.SPEECH_START, FrameEvent.SPEECH_END


def feed(ep: Endpointer, frames) -> list[FrameEvent]:
    return [ep.push(p, r) for p, r in frames]


def started(config: EndpointConfig) -> Endpointer:
    ep = Endpointer(config)
    assert ep.push(0.99, LOUD) is START
    return ep


def test_frame_is_32_ms():
    assert FRAME_SEC == pytest.approx(0.032)  # noqa: SIM300 - FRAME_SEC is the value under test, not a constant


def test_speech_starts_on_first_frame_at_threshold_with_enough_rms():
    ep = Endpointer(EndpointConfig(threshold=0.5, speech_rms_threshold=0.01))
    events = feed(ep, [(0.1, LOUD), (0.49, LOUD), (0.5, 0.01), (0.9, LOUD)])
    assert events == [NONE, NONE, START, NONE]
    assert ep.in_speech


def test_high_probability_on_a_quiet_frame_does_not_start_speech():
    ep = Endpointer(EndpointConfig(threshold=0.5, speech_rms_threshold=0.02))
    assert feed(ep, [(0.99, 0.019)] * 20) == [NONE] * 20
    assert not ep.in_speech
    assert ep.push(0.99, 0.02) is START


def test_loud_frame_below_threshold_does_not_start_speech():
    ep = Endpointer(EndpointConfig(threshold=0.6, speech_rms_threshold=0.0))
    assert feed(ep, [(0.59, 1.0)] * 10) == [NONE] * 10
    assert not ep.in_speech


def test_hysteresis_frames_between_release_and_threshold_keep_speech_going():
    config = EndpointConfig(threshold=0.5, silence_sec=0.1)  # 0.1 / 0.032 -> 3 frames
    ep = started(config)
    release = config.threshold - RELEASE_MARGIN  # 0.20
    # Far more in-between frames than the silence window: speech never ends.
    events = feed(ep, [(release, LOUD), (0.4, LOUD), (0.49, LOUD)] * 10)
    assert events == [NONE] * 30
    assert ep.in_speech
    assert ep.trailing_silence_frames == 0


def test_in_between_frames_do_not_start_speech():
    ep = Endpointer(EndpointConfig(threshold=0.5))
    assert feed(ep, [(0.45, LOUD)] * 10) == [NONE] * 10
    assert not ep.in_speech


def test_frames_below_release_threshold_count_as_silence_and_speech_resets_the_count():
    ep = started(EndpointConfig(threshold=0.5, silence_sec=0.1))  # 3 silence frames needed
    release = 0.5 - RELEASE_MARGIN  # 0.20
    assert feed(ep, [(release - 0.01, LOUD), (0.0, LOUD)]) == [NONE, NONE]
    assert ep.trailing_silence_frames == 2
    assert ep.push(release + 0.01, LOUD) is NONE  # above release: the gap closes
    assert ep.trailing_silence_frames == 0
    assert feed(ep, [(0.1, LOUD)] * 3) == [NONE, NONE, END]
    assert not ep.in_speech


def test_quiet_rms_does_not_end_speech_once_started():
    ep = started(EndpointConfig(threshold=0.5, speech_rms_threshold=0.05, silence_sec=0.1))
    assert feed(ep, [(0.9, 0.0)] * 10) == [NONE] * 10
    assert ep.in_speech


@pytest.mark.parametrize("silence_sec", [0.032, 0.1, 0.3, 0.5, 0.8, 1.0, 2.0])
def test_speech_ends_after_exactly_round_silence_sec_over_frame_frames(silence_sec):
    needed = round(silence_sec / 0.032)
    ep = started(EndpointConfig(threshold=0.5, silence_sec=silence_sec))
    events = feed(ep, [(0.0, 0.0)] * (needed + 5))
    assert events.index(END) == needed - 1  # the END comes on the needed-th silent frame
    assert events.count(END) == 1
    assert events[needed:] == [NONE] * 5  # back to idle, silence does nothing more
    assert not ep.in_speech


def test_silence_sec_0_5_needs_16_frames():
    # 0.5 / 0.032 = 15.625 -> 16 frames, i.e. 512 ms of silence.
    ep = started(EndpointConfig(silence_sec=0.5))
    events = feed(ep, [(0.0, 0.0)] * 16)
    assert events == [NONE] * 15 + [END]


def test_speech_can_start_again_after_an_end():
    ep = started(EndpointConfig(silence_sec=0.064))  # 2 frames
    assert feed(ep, [(0.0, 0.0)] * 2) == [NONE, END]
    assert ep.push(0.2, LOUD) is NONE
    assert ep.push(0.8, LOUD) is START
    assert ep.trailing_silence_frames == 0


def test_trailing_silence_counts_only_the_frames_since_the_last_speech():
    ep = started(EndpointConfig(silence_sec=1.0))
    feed(ep, [(0.9, LOUD)] * 4 + [(0.0, 0.0)] * 3)
    assert ep.trailing_silence_frames == 3
    feed(ep, [(0.9, LOUD)])
    assert ep.trailing_silence_frames == 0


def test_release_threshold_has_a_floor():
    ep = started(EndpointConfig(threshold=0.1, silence_sec=0.064))  # release = max(0.01, -0.05)
    assert feed(ep, [(0.01, LOUD)] * 5) == [NONE] * 5
    assert feed(ep, [(0.009, LOUD)] * 2) == [NONE, END]
