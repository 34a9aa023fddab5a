"""Test recordings that need nothing outside the package indexes.

Debian's alsa-utils ships real spoken prompts (/usr/share/sounds/alsa) and a noise recording;
espeak-ng speaks sentences, joined here with pauses so that endpointing has something to find.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ALSA_DIR = Path("/usr/share/sounds/alsa")
# The prompts tiny.en gets right offline; Rear_Right is heard as "rare right" even offline.
ALSA_PROMPTS = {"Front_Center.wav": "front center", "Front_Left.wav": "front left",
                "Side_Left.wav": "side left"}
NOISE_WAV = ALSA_DIR / "Noise.wav"
FRONT_CENTER_WAV = ALSA_DIR / "Front_Center.wav"  # says "Front Center"

# Speech the package ships (hwtests/speech), present on every checkout
SHIPPED_SPEECH = Path(__file__).resolve().parent.parent / "hwtests" / "speech"
JFK = SHIPPED_SPEECH / "sent_en_jfk_ask_not.wav"
JFK_TEXT = ("And so, my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
COMMAND = SHIPPED_SPEECH / "cmd_en_go_forward_ten_meters.wav"
COMMAND_TEXT = "go forward ten meters"

# Sentences the bundled tiny.en model gets right from espeak-ng's voice (some it does not:
# "The weather today..." comes back as "But when the today...", even offline).
SENTENCES = (
    "Please open the front door for me.",
    "My brother plays the piano every evening.",
    "The children are playing in the garden.",
)


@dataclass(frozen=True)
class Speech:
    path: Path
    reference: str
    sentences: tuple[str, ...]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, path: Path, words_per_minute: int = 140) -> tuple[np.ndarray, int]:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text],
                   check=True, capture_output=True, timeout=60)
    audio, rate_hz = sf.read(str(path), dtype="float32")
    return audio, rate_hz


def sentences_with_pauses(directory: Path, sentences=SENTENCES, pause_sec: float = 1.2,
                          lead_sec: float = 0.5, trail_sec: float = 1.0, name: str = "sentences.wav") -> Speech:
    """Speak each sentence and join them with `pause_sec` of silence; write one WAV."""
    parts = []
    rate_hz = 22_050
    for i, sentence in enumerate(sentences):
        audio, rate_hz = speak(sentence, directory / f"_s{i}.wav")
        parts.append(audio)
    silence = lambda sec: np.zeros(int(sec * rate_hz), dtype=np.float32)  # noqa: E731
    joined = [silence(lead_sec)]
    for i, audio in enumerate(parts):
        joined.append(audio)
        joined.append(silence(pause_sec if i < len(parts) - 1 else trail_sec))
    path = directory / name
    sf.write(str(path), np.concatenate(joined), rate_hz, subtype="PCM_16")
    return Speech(path=path, reference=" ".join(sentences), sentences=tuple(sentences))


def alsa_prompt_16k(name: str = "Front_Center.wav") -> np.ndarray:
    """One of Debian's spoken prompts as 16 kHz mono float32 (the model's input)."""
    import soxr

    audio, rate_hz = sf.read(str(ALSA_DIR / name), dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), rate_hz, 16_000).astype(np.float32)


def silence_wav(directory: Path, seconds: float = 20.0, rate_hz: int = 16_000) -> Path:
    path = directory / "silence.wav"
    sf.write(str(path), np.zeros(int(seconds * rate_hz), dtype=np.int16), rate_hz, subtype="PCM_16")
    return path


def looped_noise_wav(directory: Path, seconds: float = 20.0) -> Path:
    """Debian's Noise.wav repeated to `seconds`."""
    audio, rate_hz = sf.read(str(NOISE_WAV), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    repeats = int(np.ceil(seconds * rate_hz / mono.size))
    path = directory / "noise.wav"
    sf.write(str(path), np.tile(mono, repeats)[: int(seconds * rate_hz)], rate_hz, subtype="PCM_16")
    return path
