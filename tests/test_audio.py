"""PCM validation, int16 decoding, RMS and the streaming resampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.audio import (
    MODEL_SAMPLE_RATE_HZ,
    StreamResampler,
    pcm16_to_float32,
    rms,
    validate_chunk,
)
from appliance.errors import ApplianceError


def pcm(n_samples: int) -> bytes:
    return b"\x00\x00" * n_samples


# --- validate_chunk -------------------------------------------------------------------------

@pytest.mark.parametrize("rate_hz", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_accepted_rates_return_the_duration(rate_hz):
    assert validate_chunk(pcm(rate_hz // 10), rate_hz, max_chunk_ms=100) == pytest.approx(0.1)


@pytest.mark.parametrize("rate_hz", [0, -16_000, 7_999, 48_001, 96_000])
def test_rate_outside_8k_48k_is_err1003(rate_hz):
    with pytest.raises(ApplianceError) as info:
        validate_chunk(pcm(160), rate_hz, max_chunk_ms=None)
    assert info.value.code == "ERR1003"
    assert str(rate_hz) in info.value.message
    assert "8000-48000" in info.value.message


@pytest.mark.parametrize("n_bytes", [1, 3, 321])
def test_odd_byte_count_is_err1003(n_bytes):
    with pytest.raises(ApplianceError) as info:
        validate_chunk(b"\x01" * n_bytes, 16_000, max_chunk_ms=None)
    assert info.value.code == "ERR1003"
    assert f"{n_bytes} bytes" in info.value.message
    assert info.value.grpc_status == "INVALID_ARGUMENT"


def test_empty_chunk_is_valid():
    assert validate_chunk(b"", 16_000, max_chunk_ms=100) == 0.0


def test_chunk_longer_than_max_chunk_ms_is_err1003():
    # exactly at the limit passes; one sample more does not
    assert validate_chunk(pcm(3200), 16_000, max_chunk_ms=200) == pytest.approx(0.2)
    with pytest.raises(ApplianceError) as info:
        validate_chunk(pcm(3201), 16_000, max_chunk_ms=200)
    assert info.value.code == "ERR1003"
    assert "max_chunk_ms" in info.value.message
    assert "200 ms" in info.value.message


def test_max_chunk_ms_depends_on_the_rate():
    # 4800 samples = 100 ms at 48 kHz but 600 ms at 8 kHz
    assert validate_chunk(pcm(4800), 48_000, max_chunk_ms=100) == pytest.approx(0.1)
    with pytest.raises(ApplianceError):
        validate_chunk(pcm(4800), 8_000, max_chunk_ms=100)


def test_max_chunk_ms_none_disables_the_limit():
    assert validate_chunk(pcm(16_000 * 60), 16_000, max_chunk_ms=None) == pytest.approx(60.0)


# --- pcm16_to_float32 and rms ---------------------------------------------------------------

def test_pcm16_to_float32_scales_little_endian_int16():
    values = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype="<i2")
    out = pcm16_to_float32(values.tobytes())
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values.astype(np.float32) / 32768.0)
    assert out.min() == -1.0 and out.max() < 1.0


def test_pcm16_to_float32_is_little_endian_regardless_of_host():
    assert pcm16_to_float32(b"\x00\x40")[0] == 0.5  # 0x4000 = 16384
    assert pcm16_to_float32(b"").size == 0


def test_rms():
    assert rms(np.zeros(0, dtype=np.float32)) == 0.0
    assert rms(np.zeros(512, dtype=np.float32)) == 0.0
    assert rms(np.full(512, -0.25, dtype=np.float32)) == pytest.approx(0.25)
    t = np.arange(16_000) / 16_000
    sine = (0.5 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
    assert rms(sine) == pytest.approx(0.5 / math.sqrt(2), rel=1e-4)
    assert isinstance(rms(sine), float)


# --- StreamResampler ------------------------------------------------------------------------

def sine(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amplitude * np.sin(2 * math.pi * freq_hz * t)).astype(np.float32)


def uneven_chunks(audio: np.ndarray, seed: int = 0):
    rng = np.random.default_rng(seed)
    i = 0
    while i < audio.size:
        n = int(rng.integers(1, 2000))
        yield audio[i:i + n]
        i += n


def peak_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate_hz)[np.argmax(spectrum)])


def test_resampler_48k_sine_in_uneven_chunks_comes_out_at_16k():
    source = sine(1000, 48_000, 2.0)
    resampler = StreamResampler()
    parts = [resampler(chunk, 48_000) for chunk in uneven_chunks(source)]
    parts.append(resampler.flush())
    out = np.concatenate(parts)
    assert out.dtype == np.float32
    assert abs(out.size - source.size // 3) <= 4
    assert peak_hz(out, MODEL_SAMPLE_RATE_HZ) == pytest.approx(1000, abs=2)
    # the level survives resampling (away from the filter's edges)
    assert rms(out[1000:-1000]) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


def test_resampler_chunked_output_matches_one_call():
    source = sine(1000, 44_100, 1.0)
    whole = StreamResampler()
    one_call = np.concatenate((whole(source, 44_100), whole.flush()))
    chunked = StreamResampler()
    parts = [chunked(chunk, 44_100) for chunk in uneven_chunks(source, seed=3)]
    parts.append(chunked.flush())
    np.testing.assert_allclose(np.concatenate(parts), one_call, atol=1e-5)
    assert abs(one_call.size - 16_000) <= 4


def test_resampler_8k_upsamples():
    source = sine(1000, 8_000, 1.0)
    resampler = StreamResampler()
    out = np.concatenate([resampler(c, 8_000) for c in uneven_chunks(source, seed=1)] + [resampler.flush()])
    assert abs(out.size - 16_000) <= 4
    assert peak_hz(out, MODEL_SAMPLE_RATE_HZ) == pytest.approx(1000, abs=2)


def test_resampler_rate_change_mid_stream_is_err1003():
    resampler = StreamResampler()
    resampler(sine(1000, 48_000, 0.1), 48_000)
    with pytest.raises(ApplianceError) as info:
        resampler(sine(1000, 16_000, 0.1), 16_000)
    assert info.value.code == "ERR1003"
    assert "48000" in info.value.message and "16000" in info.value.message


def test_resampler_rate_change_from_16k_is_err1003():
    resampler = StreamResampler()
    resampler(np.zeros(160, dtype=np.float32), 16_000)
    with pytest.raises(ApplianceError) as info:
        resampler(np.zeros(480, dtype=np.float32), 48_000)
    assert info.value.code == "ERR1003"


def test_resampler_passes_16k_through_unchanged():
    source = sine(1000, 16_000, 0.5)
    resampler = StreamResampler()
    out = [resampler(chunk, 16_000) for chunk in uneven_chunks(source, seed=2)]
    np.testing.assert_array_equal(np.concatenate(out), source)
    tail = resampler.flush()
    assert tail.size == 0 and tail.dtype == np.float32
