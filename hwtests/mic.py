"""The audio input step (`--mic`): which microphones PortAudio sees, which sample rates the chosen
one opens at, and 3 s recorded from it: level, peak and clipping, so an operator finds a muted,
too quiet or overdriven microphone before a kiosk user does.

Device listing and choice are the microphone client's (clients/realtime/mic.py), so `--mic-device`
means what `--device` means there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clients.realtime.mic import SILENCE_DBFS, choose_input_device, import_sounddevice, input_devices, level_dbfs

RECORD_SEC = 3.0
# The rates a microphone is commonly asked for: telephony, the model's 16 kHz, CD and video.
CANDIDATE_RATES_HZ = (8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000)
# Speech at arm's length from a working microphone sits around -40..-20 dBFS RMS; a room with
# nobody talking is still above -70. Below this the input is muted or disconnected.
SILENT_RMS_DBFS = -70.0
# A sample at full scale is clipped; a few in 3 s is a loud click, more is a gain set too high.
CLIPPED_FRACTION_LIMIT = 0.001


def supported_rates(sd: Any, device_index: int) -> list[int]:
    """The candidate rates PortAudio opens this device at (mono, 16-bit), without recording."""
    rates = []
    for rate_hz in CANDIDATE_RATES_HZ:
        try:
            sd.check_input_settings(device=device_index, channels=1, dtype="int16", samplerate=rate_hz)
        except Exception:  # PortAudioError or ValueError: this rate is not offered
            continue
        rates.append(rate_hz)
    return rates


def peak_dbfs(samples: np.ndarray) -> float:
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if samples.size else 0
    return max(SILENCE_DBFS, 20 * math.log10(peak / 32768.0)) if peak else SILENCE_DBFS


def assess(rms_dbfs: float, clipped_fraction: float) -> str:
    if rms_dbfs <= SILENT_RMS_DBFS:
        return "silent: muted, disconnected, or the wrong device"
    if clipped_fraction > CLIPPED_FRACTION_LIMIT:
        return "clipping: lower the input gain"
    return "ok"


def check_microphone(wanted: str | None, record_sec: float = RECORD_SEC) -> dict[str, Any]:
    """{"devices", "device", "rate_hz", "supported_rates_hz", "record_sec", "rms_dbfs", "peak_dbfs",
    "clipped_fraction", "assessment"}; raises CliError when there is no usable input device."""
    sd = import_sounddevice()
    devices, default_index = input_devices(sd)
    device = choose_input_device(devices, wanted, default_index)
    rate_hz = round(device["default_samplerate"])  # its own rate: what it delivers without resampling
    recording = sd.rec(round(record_sec * rate_hz), samplerate=rate_hz, channels=1, dtype="int16",
                       device=device["index"], blocking=True)
    samples = np.asarray(recording[:, 0], dtype=np.int16)
    clipped = int(np.count_nonzero((samples >= 32767) | (samples <= -32768)))
    clipped_fraction = clipped / samples.size if samples.size else 0.0
    rms = level_dbfs(samples.astype("<i2").tobytes())
    return {
        "devices": [{"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
                     "default_rate_hz": d["default_samplerate"]} for d in devices],
        "device": device["name"],
        "rate_hz": rate_hz,
        "supported_rates_hz": supported_rates(sd, device["index"]),
        "record_sec": record_sec,
        "rms_dbfs": rms,
        "peak_dbfs": peak_dbfs(samples),
        "clipped_fraction": clipped_fraction,
        "assessment": assess(rms, clipped_fraction),
    }
