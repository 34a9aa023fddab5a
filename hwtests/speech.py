"""The speech set hwtests measures with: hwtests/speech (ships with the package, so a fresh box
needs nothing else). Its manifest has the shared corpus's columns, so clients.corpus reads it."""

from __future__ import annotations

from pathlib import Path

from clients.corpus import Recording, corpus

SPEECH_DIR = Path(__file__).resolve().parent / "speech"


def speech_set(audio_dir: Path = SPEECH_DIR) -> list[Recording]:
    recordings = [r for r in corpus(audio_dir) if r.path.is_file()]
    if not recordings:
        raise FileNotFoundError(f"no recordings listed in {audio_dir / 'manifest.tsv'}")
    return recordings
