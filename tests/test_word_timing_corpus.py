"""Word timings never change a transcript, on real speech: each recording goes through the real
stages (resampler, Silero VAD, segmenter, transcriber, scheduler, the bundled tiny.en) twice, once
plain and once with `word_timestamps`, with partials on and off (speech events on with partials,
as a kiosk runs), and the finals must match word for word while every word of every word-timed
final is timed, in order, inside its utterance.

Dues go to the transcriber one at a time (each after the last one's outcome) and the segmenter
sees an idle decoder, so both runs see the same utterances and partials and any difference is the
word timings' own. CI runs the shipped clips (hwtests/speech), an espeak-ng recording and a handful
of the dev set (../shared/audio, both batches) when it is present; STT_WORD_TIMING_CORPUS=all runs
every English recording of the dev set (minutes).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.scheduler import DecodeScheduler
from appliance.streaming.frontend import Frontend
from appliance.streaming.segmenter import Segmenter, SegmenterConfig
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import RecognitionResult
from appliance.vad import SileroOnnx, VadStream
from clients.audio import load_pcm16
from clients.corpus import SHARED_AUDIO
from clients.dev_set import MORE_AUDIO, dev_set, sample
from tests.helpers import REPO_ROOT
from tests.stages import MODEL_ID, Backlog, chunks, limits, settings

SHIPPED = REPO_ROOT / "hwtests" / "speech"
CI_FILES_PER_BATCH = 2  # of the dev set, per CI run (STT_WORD_TIMING_CORPUS=all: every file)
PARTIAL_MODES = {"partials off": {}, "partials on": {"partial": "true", "speech_events": "true"}}


@pytest.fixture(scope="module")
def backend() -> FasterWhisperBackend:
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True,
                                encode_window="bucketed")  # the shipped default


@pytest.fixture(scope="module")
def silero() -> SileroOnnx:
    return SileroOnnx()


def run_stages(backend, silero, path: Path, attributes: dict[str, str]) -> list[RecognitionResult]:
    """Every result a session with `attributes` gets for the recording at `path`."""
    pcm16, rate_hz = load_pcm16(path)

    async def scenario() -> list[RecognitionResult]:
        session = settings(attributes=attributes)
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        delivered: list = []
        transcriber = Transcriber(session, scheduler, backend, deliver=delivered.append, max_pending=8)
        segmenter = Segmenter(SegmenterConfig.for_session(session, limits()), Backlog())
        frontend = Frontend(VadStream(silero))

        async def submit(due) -> None:
            for boundary in segmenter.take_boundaries():
                if session.speech_events:
                    transcriber.announce(boundary)
            if due is not None:
                transcriber.submit(due)
                await asyncio.wait_for(transcriber.wait_idle(), timeout=120)

        samples = [frontend.to_model_rate(c, rate_hz) for c in chunks(pcm16, rate_hz)] + [frontend.flush()]
        for piece in samples:
            batch = frontend.frames(piece)
            for frame, probability, level in zip(batch.frames, batch.probabilities, batch.rms, strict=True):
                await submit(segmenter.push(frame, float(probability), float(level)))
        await submit(segmenter.finish())
        scheduler.shutdown()
        await asyncio.sleep(0)  # the dispatcher sees its cancellation
        return [r for r in delivered if isinstance(r, RecognitionResult)]

    return asyncio.run(scenario())


def check_recording(backend, silero, path: Path) -> list[str]:
    """Plain and word-timed runs of `path` in both partial modes; what failed, as messages."""
    problems = []
    for mode, attributes in PARTIAL_MODES.items():
        plain = run_stages(backend, silero, path, attributes)
        timed = run_stages(backend, silero, path, {**attributes, "word_timestamps": "true"})
        plain_finals = [(r.utterance_index, r.text) for r in plain if r.is_final]
        finals = [r for r in timed if r.is_final]
        if [(r.utterance_index, r.text) for r in finals] != plain_finals:
            problems.append(f"{path.name} ({mode}): word-timed {[r.text for r in finals]} != plain "
                            f"{[t for _, t in plain_finals]}")
        if any(r.words for r in timed if not r.is_final):
            problems.append(f"{path.name} ({mode}): a partial carries words")
        problems += [f"{path.name} ({mode}) utterance {r.utterance_index}: {why}"
                     for r in finals if r.text and (why := words_problem(r))]
    return problems


def words_problem(final: RecognitionResult) -> str | None:
    """Why the final's words do not cover its text in order inside its utterance, or None."""
    words = final.words
    if " ".join(w.word for w in words) != final.text:
        return f"words {[w.word for w in words]} do not spell {final.text!r}"
    if not all(final.start_sec - 0.01 <= w.start_sec <= w.end_sec <= final.end_sec + 0.5 for w in words):
        return f"a word outside {final.start_sec}-{final.end_sec} s: {[(w.start_sec, w.end_sec) for w in words]}"
    if not all(a.start_sec <= b.start_sec for a, b in itertools.pairwise(words)):
        return "words out of order"
    if not all(0.0 <= w.probability <= 1.0 for w in words) or all(w.probability == 0.0 for w in words):
        return "no word was aligned (probabilities all 0)"
    return None


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.glob("*.wav")))
def test_shipped_clips_keep_their_text_with_word_timings(backend, silero, name):
    assert not check_recording(backend, silero, SHIPPED / name)


def test_espeak_sentences_keep_their_text_with_word_timings(backend, silero, sentences):
    assert not check_recording(backend, silero, sentences.path)


def dev_set_files() -> list[Path]:
    """The dev set's English recordings (both batches, clients/dev_set.py): the first two sentences of
    each batch by name for CI, or every one with STT_WORD_TIMING_CORPUS=all."""
    recordings = dev_set()
    if os.environ.get("STT_WORD_TIMING_CORPUS") != "all":
        recordings = sample(recordings, CI_FILES_PER_BATCH)
    return [r.path for r in recordings]


@pytest.mark.parametrize("path", dev_set_files() or [None], ids=lambda p: p.name if p else "absent")
def test_the_dev_set_keeps_its_text_with_word_timings(backend, silero, path):
    if path is None:
        pytest.skip(f"the dev set is not here ({SHARED_AUDIO} and {MORE_AUDIO} hold no manifest.tsv)")
    assert not check_recording(backend, silero, path)
