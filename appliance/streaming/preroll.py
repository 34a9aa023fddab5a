"""How much audio before an utterance's first speech frame goes into its decode: more in noise.

The VAD opens an utterance on its first confident speech frame; the pre-roll (`preroll_sec`, 0.3 s)
before it keeps the onset's first consonants. In white noise the VAD hears an onset later, as the
noise hides the weak first sounds ("ask not" -> "and not"), and 0.2 s more pre-roll won back words
there (white 5 dB 24.3 -> 23.8 % on the dev set); in clean speech the same 0.2 s reached into the
previous sentence of a long reading and cost words (docs/accuracy.md). So the longer pre-roll is
taken only where the stream's own SNR estimate (`SpeechToNoise`) says noise: below NOISY_PREROLL_BELOW_DB.
On the dev set the estimate reads 17.7-47.5 dB at onsets of clean speech and at most 15.4 dB at
onsets mixed at 10 or 5 dB SNR (pink, white; bench/snr_readings.py). At a stream's first onset the
estimate rarely exists yet (it needs 0.5 s of confident speech), so an utterance that opens without
one keeps the longer pre-roll and settles it at its first decode, when the estimate usually exists:
the extra is dropped unless it then reads noise (still none, as in babble the VAD never calls
silence: the default).
"""

from __future__ import annotations

from appliance.vad import FRAME_SEC

NOISY_PREROLL_BELOW_DB = 16.0  # between the clean onsets' lowest reading and the noisy onsets' highest
NOISY_EXTRA_PREROLL_SEC = 0.2  # added to preroll_sec in noise


def _frames(seconds: float) -> int:
    return max(0, round(seconds / FRAME_SEC))


def most_preroll_frames(preroll_sec: float) -> int:
    """Frames to keep while idle: enough for the pre-roll in noise."""
    return _frames(preroll_sec + NOISY_EXTRA_PREROLL_SEC) if preroll_sec > 0 else 0


def preroll_frames(preroll_sec: float, snr_db: float | None) -> int:
    """Frames of pre-roll an utterance takes, given the stream's SNR estimate (None: none yet).
    A pre-roll of 0 (turned off) stays 0."""
    noisy = snr_db is not None and snr_db < NOISY_PREROLL_BELOW_DB
    return most_preroll_frames(preroll_sec) if noisy else _frames(preroll_sec)


def opening_preroll_frames(preroll_sec: float, snr_db: float | None) -> int:
    """Frames of pre-roll an utterance opens with: without an estimate yet, the longer pre-roll, which
    its first decode settles (`preroll_to_drop`)."""
    return most_preroll_frames(preroll_sec) if snr_db is None else preroll_frames(preroll_sec, snr_db)


def preroll_to_drop(preroll_sec: float, snr_db: float | None, opened_with_frames: int) -> int:
    """At the first decode of an utterance that opened without an estimate, with `opened_with_frames`
    of pre-roll: how many of its first frames go. The extra beyond the default, unless the estimate
    now reads noise."""
    default = _frames(preroll_sec)
    if preroll_frames(preroll_sec, snr_db) != default:
        return 0
    return max(0, min(opened_with_frames, most_preroll_frames(preroll_sec)) - default)
