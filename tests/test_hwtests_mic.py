"""hwtests' audio input step (`--mic`) on a real capture path: a virtual PulseAudio microphone
(tests/virtual_mic.py) read through sounddevice → PortAudio → ALSA's pulse plugin, in a process of
its own as hwtests runs it. A tone played into it reads at its level; nothing played reads as silent.
Skips, naming the package, where PulseAudio, the plugin, PortAudio or sounddevice is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from tests.helpers import REPO_ROOT
from tests.virtual_mic import PORTAUDIO_DEVICE, VirtualMic, missing_requirements

CHECK = "import json, sys; from hwtests.mic import check_microphone; print(json.dumps(check_microphone(sys.argv[1])))"
TONE_AMPLITUDE = 0.25  # a 440 Hz sine at a quarter of full scale: RMS 20*log10(0.25/sqrt(2)) = -15.1 dBFS


@pytest.fixture(scope="module")
def virtual_mic(tmp_path_factory):
    missing = missing_requirements()
    if missing:
        pytest.skip("needs " + ", ".join(missing))
    with VirtualMic(tmp_path_factory.mktemp("pulse")) as mic:
        yield mic


def check(mic: VirtualMic) -> dict:
    done = subprocess.run([sys.executable, "-c", CHECK, PORTAUDIO_DEVICE], cwd=REPO_ROOT, env=mic.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_tone_played_into_the_microphone_reads_at_its_level(virtual_mic, tmp_path):
    # Long enough to cover the checker's interpreter start and its 3 s recording on a busy box.
    t = np.arange(12 * 16_000) / 16_000
    tone = tmp_path / "tone.wav"
    soundfile.write(tone, TONE_AMPLITUDE * np.sin(2 * np.pi * 440 * t), 16_000, subtype="PCM_16")
    player = threading.Thread(target=virtual_mic.play, args=(tone,))
    player.start()
    try:
        result = check(virtual_mic)
    finally:
        player.join(timeout=60)
    assert result["device"] == PORTAUDIO_DEVICE
    assert PORTAUDIO_DEVICE in [d["name"] for d in result["devices"]]
    assert result["assessment"] == "ok", result
    assert -19.0 < result["rms_dbfs"] < -12.0, result
    assert -14.0 < result["peak_dbfs"] < -10.0, result  # a 0.25 peak is -12 dBFS
    assert result["clipped_fraction"] == 0.0
    # The sound server resamples, so the usual rates all open, the model's 16 kHz among them.
    assert {16_000, 44_100, 48_000} <= set(result["supported_rates_hz"])
    assert result["rate_hz"] in result["supported_rates_hz"]


def test_a_microphone_with_nothing_playing_is_reported_silent(virtual_mic):
    result = check(virtual_mic)
    assert result["assessment"].startswith("silent"), result
    assert result["rms_dbfs"] <= -70.0
