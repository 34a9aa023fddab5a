"""Streaming accuracy on the real speech corpus in ../shared/audio (skipped where it is absent).

Every English recording is streamed at realtime pace, all at once, through one real appliance; each
file's streamed WER must stay within 2 points of offline faster-whisper on the same file, model,
precision and decode profile.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from clients.corpus import SHARED_AUDIO, english_corpus, offline_transcribe, word_errors
from clients.local_server import LocalAppliance
from tests.conftest import finals_text, stream_file

pytestmark = pytest.mark.corpus

CORPUS = english_corpus()
if not CORPUS:
    pytest.skip(f"no speech corpus at {SHARED_AUDIO} (a fresh clone without ../shared)", allow_module_level=True)


@pytest.fixture(scope="module")
def streamed():
    # All files at once is far past this box's capacity (docs/capacity.md): this is an accuracy
    # test, so finals may wait as long as they need (no decode_queue_timeout_sec).
    with LocalAppliance(env={"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0"}) as server, \
            ThreadPoolExecutor(len(CORPUS)) as pool:
        results = pool.map(lambda rec: stream_file(server.address, rec.path, realtime=True), CORPUS)
        return dict(zip((rec.path.name for rec in CORPUS), results))


@pytest.mark.parametrize("recording", CORPUS, ids=lambda rec: rec.path.stem)
def test_streaming_wer_within_two_points_of_offline(streamed, recording):
    stream_errors, words = word_errors(recording.reference, finals_text(streamed[recording.path.name]))
    offline_errors, _ = word_errors(recording.reference, offline_transcribe(recording.path))
    assert 100 * stream_errors / words <= 100 * offline_errors / words + 2.0, finals_text(streamed[recording.path.name])


def test_long_recording_gives_ordered_finals_covering_the_file(streamed):
    long_file = next(rec for rec in CORPUS if rec.path.name.startswith("long_en_"))
    finals = [r for r in streamed[long_file.path.name] if r.is_final]
    assert len(finals) >= 5
    assert [r.utterance_index for r in finals] == list(range(len(finals)))
    assert all(a.end_sec <= b.start_sec for a, b in zip(finals, finals[1:]))
    assert finals[0].start_sec < 2.0 and finals[-1].end_sec > long_file.duration_sec - 3.0
    assert all(r.text for r in finals)
