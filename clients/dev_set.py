"""The dev set: both batches of ../shared/audio, listed once for every measurement that covers it.

The first batch is `../shared/audio/manifest.tsv`; the second (`../shared/audio/more/`, more English
read speech from other voices) has its own manifest and stays in its own folder, as its README asks,
so code that reads only the first manifest does not pick it up unasked. `dev_set()` reads both and
tags each recording with its batch and its corpus group (librispeech, librivox, vctk, arctic, ...),
so tables can say where a difference comes from. A clone without ../shared gets an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.corpus import SHARED_AUDIO, Recording, corpus

MORE_AUDIO = SHARED_AUDIO / "more"
BATCHES = {"first": SHARED_AUDIO, "more": MORE_AUDIO}  # name -> folder holding its manifest.tsv
# Corpus names as they appear in file names (`sent_en_vctk_p225_003.wav`); other files are commands
# recorded for small-vocabulary tests (pocketsphinx, alsa-utils, speech_recognition).
GROUPS = ("librispeech", "librivox", "libritts", "vctk", "arctic", "jfk", "osr")


@dataclass(frozen=True)
class DevRecording(Recording):
    batch: str = "first"

    @property
    def group(self) -> str:
        """The corpus the recording comes from, read from its file name."""
        parts = self.path.stem.split("_")
        return parts[2] if len(parts) > 2 and parts[2] in GROUPS else "commands"


def dev_set(language: str | None = "en", batches: tuple[str, ...] = tuple(BATCHES)) -> list[DevRecording]:
    """The recordings of `batches` (first batch first) in `language` (None: every language)."""
    return [DevRecording(r.path, r.language, r.duration_sec, r.reference, batch=name)
            for name in batches for r in corpus(BATCHES[name])
            if language is None or r.language == language]


def sample(recordings: list[DevRecording], per_batch: int) -> list[DevRecording]:
    """A few of each batch for CI: its first `per_batch` sentences by file name (no commands, no
    long files), the same files on every run."""
    return [r for name in BATCHES
            for r in sorted((r for r in recordings if r.batch == name and r.path.name.startswith("sent_")),
                            key=lambda r: r.path.name)[:per_batch]]
