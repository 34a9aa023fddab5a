"""Uploaded files (appliance.uploads) and the answer shapes (appliance.transcript_formats), without a
server: every container decodes to 16 kHz mono of the right length, damaged files are refused with
ERR1003 and nothing else, and the subtitle clocks are exact."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import soundfile as sf

from appliance.errors import ApplianceError
from appliance.file_transcriber import Segment, Transcription
from appliance.transcript_formats import render
from appliance.uploads import DecodedUpload

CONTAINERS = [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("OGG", "OPUS"),
              ("MP3", "MPEG_LAYER_III")]


def tone_file(container: str, subtype: str, seconds: float = 2.0, rate_hz: int = 48000, channels: int = 2) -> bytes:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, np.repeat(wave[:, None], channels, axis=1), rate_hz, format=container, subtype=subtype)
    return out.getvalue()


@pytest.mark.parametrize(("container", "subtype"), CONTAINERS)
def test_each_container_decodes_to_16_khz_mono_of_its_length(container, subtype):
    upload = DecodedUpload(tone_file(container, subtype, seconds=7.0))  # longer than one 5 s block
    pcm = b"".join(upload.blocks())
    samples = np.frombuffer(pcm, dtype="<i2")
    assert upload.format.container == container and upload.format.channels == 2
    # MP3 and Opus pad their frames; the length is the file's within a frame or two.
    assert abs(len(samples) / 16000 - 7.0) < 0.1 and upload.decoded_sec == pytest.approx(len(samples) / 16000)
    assert 0.2 < np.abs(samples).max() / 32767 < 0.45  # the tone's level survived resampling


def test_a_file_longer_than_a_session_may_be_is_refused_from_its_header():
    with pytest.raises(ApplianceError) as refused:
        DecodedUpload(tone_file("FLAC", "PCM_16", seconds=3.0), max_duration_sec=2.0)
    assert refused.value.code == "ERR1013"


@pytest.mark.parametrize(("container", "subtype"), CONTAINERS)
def test_damaged_files_decode_or_are_refused_with_err1003_and_nothing_else(container, subtype):
    """Truncations and flipped bytes, seeded: libsndfile either decodes what it can or the upload
    gets ERR1003 (or ERR1013 when a damaged header decodes past the length cap); no other
    exception escapes to the HTTP plane."""
    original = tone_file(container, subtype, seconds=1.5, channels=1)
    rng = random.Random(f"{container}-{subtype}")
    for _ in range(40):
        data = bytearray(original)
        if rng.random() < 0.5:
            del data[rng.randrange(1, len(data)):]
        for _ in range(rng.randrange(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            upload = DecodedUpload(bytes(data), max_duration_sec=10)
            decoded = sum(len(block) for block in upload.blocks()) / 2 / 16000
        except ApplianceError as err:
            assert err.code in ("ERR1003", "ERR1013"), err
        else:
            assert decoded <= 10 + 5  # at most one block past the cap


def test_subtitle_clocks_and_shapes():
    t = Transcription([Segment(0.0, 1.25, "Hello there."), Segment(3725.5, 3727.0, "Later on.")], "en", 3727.0,
                      "transcribe", "cpu-tiny.en")
    _, srt = render(t, "srt")
    assert srt == "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n01:02:05,500 --> 01:02:07,000\nLater on.\n\n"
    _, vtt = render(t, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n01:02:05.500")
    content_type, verbose = render(t, "verbose_json")
    assert content_type == "application/json" and verbose["language"] == "english"
    assert verbose["text"] == "Hello there. Later on." and verbose["usage"] == {"type": "duration", "seconds": 3727}
    silent = Transcription([], "", 2.0, "transcribe", "cpu-tiny.en")
    assert render(silent, "srt")[1] == "" and render(silent, "vtt")[1] == "WEBVTT\n\n"
    assert render(silent, "text") == ("text/plain; charset=utf-8", "\n") and render(silent, "json")[1]["text"] == ""
