"""Uploaded files (appliance.uploads) and the answer shapes (appliance.transcript_formats), without a
server: every container decodes to 16 kHz mono of the right length (the WebM, MP4/M4A and MP3 files
browsers and phones record too, made here by FFmpeg's encoders), damaged files are refused with
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
from tests.media import ENCODINGS, encode

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


def tone(seconds: float, rate_hz: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_recorder_formats_decode_to_16_khz_mono_of_their_length(name):
    upload = DecodedUpload(encode(tone(7.0), 48000, name))
    samples = np.frombuffer(b"".join(upload.blocks()), dtype="<i2")
    expected = {"webm": "WEBM", "mp4": "MP4", "m4a": "MP4", "mp3": "MP3"}[name]
    assert upload.format.container == expected and upload.format.channels == 2
    assert upload.format.sample_rate_hz == ENCODINGS[name][2]
    assert upload.format.duration_sec == pytest.approx(7.0, abs=0.1)
    # AAC's priming samples and Opus's and MP3's frames pad the file by a frame or two.
    assert abs(len(samples) / 16000 - 7.0) < 0.1 and upload.decoded_sec == pytest.approx(len(samples) / 16000)
    assert 0.2 < np.abs(samples).max() / 32767 < 0.45


@pytest.mark.parametrize("name", ["webm", "mp4"])
def test_a_long_recorder_file_is_refused_from_its_header_or_at_the_cap(name):
    with pytest.raises(ApplianceError) as refused:
        upload = DecodedUpload(encode(tone(3.0), 48000, name, channels=1), max_duration_sec=2.0)
        list(upload.blocks())
    assert refused.value.code == "ERR1013"


@pytest.mark.parametrize(("name", "damage", "says"), [
    ("mp4", "truncated", "could not be opened"),  # the moov box, written last, is cut off
    ("m4a", "truncated", "could not be opened"),
    ("webm", "garbage", ""),  # the EBML magic, then noise
    ("mp4", "garbage", "could not be opened"),
    ("mp3", "garbage", "not audio"),
])
def test_broken_recorder_files_are_refused_with_err1003(name, damage, says):
    data = encode(tone(2.0), 48000, name)
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        head = 8 if name != "mp3" else 0
        data = data[:head] + random.Random(name).randbytes(4096)
    with pytest.raises(ApplianceError) as refused:
        list(DecodedUpload(data, max_duration_sec=10).blocks())
    assert refused.value.code == "ERR1003" and says in refused.value.message, refused.value.message


def test_a_codec_outside_the_list_is_refused_by_name():
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:  # PCM in Matroska: a valid file, not one we take
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((tone(1.0, 16000) * 32767).astype("<i2")[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(ApplianceError) as refused:
        DecodedUpload(out.getvalue())
    assert refused.value.code == "ERR1003" and "pcm_s16le" in refused.value.message


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_damaged_recorder_files_decode_or_are_refused_with_err1003_and_nothing_else(name):
    # the first 8 bytes (the magic that names the container) kept: damage inside a WebM/MP4/MP3
    assert_damaged_copies_decode_or_are_refused(encode(tone(1.5), 48000, name, channels=1), name, keep=8)


def test_a_file_longer_than_a_session_may_be_is_refused_from_its_header():
    with pytest.raises(ApplianceError) as refused:
        DecodedUpload(tone_file("FLAC", "PCM_16", seconds=3.0), max_duration_sec=2.0)
    assert refused.value.code == "ERR1013"


@pytest.mark.parametrize(("container", "subtype"), CONTAINERS)
def test_damaged_files_decode_or_are_refused_with_err1003_and_nothing_else(container, subtype):
    """Truncations and flipped bytes, seeded: libsndfile either decodes what it can or the upload
    gets ERR1003 (or ERR1013 when a damaged header decodes past the length cap); no other
    exception escapes to the HTTP plane."""
    assert_damaged_copies_decode_or_are_refused(tone_file(container, subtype, seconds=1.5, channels=1),
                                                f"{container}-{subtype}", keep=0)


def assert_damaged_copies_decode_or_are_refused(original: bytes, seed: str, *, keep: int) -> None:
    """40 seeded copies of `original`, truncated and with flipped bytes past its first `keep` bytes:
    each decodes (at most one block past the 10 s cap) or is refused with ERR1003/ERR1013."""
    rng = random.Random(seed)
    for _ in range(40):
        data = bytearray(original)
        if rng.random() < 0.5:
            del data[rng.randrange(max(keep, 1), len(data)):]
        for _ in range(rng.randrange(1, 16)):
            data[rng.randrange(keep, len(data))] = rng.randrange(256)
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


@pytest.mark.parametrize("name", ["webm", "m4a"])
def test_the_file_clients_read_recorder_formats_at_their_own_rate(name, tmp_path):
    from clients.audio import load_pcm16

    path = tmp_path / f"recording.{name}"
    path.write_bytes(encode(tone(2.0), 48000, name))
    pcm16, rate_hz = load_pcm16(path)
    samples = np.frombuffer(pcm16, dtype="<i2")
    assert rate_hz == ENCODINGS[name][2] and abs(len(samples) / rate_hz - 2.0) < 0.1
    assert 0.2 < np.abs(samples).max() / 32767 < 0.45
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(ValueError, match="cannot read audio file"):
        load_pcm16(path)
