"""Streaming accuracy on the real speech corpus in ../shared/audio (skipped where it is absent).

CI reads the dev set's first batch and four sentences of its second (`clients/dev_set.py`: both
batches are ~600 s of speech, too much for CI's budget twice over); bench/wer.py covers all of it,
clean and in noise, with a table per source (docs/accuracy.md). Every recording read is streamed
at realtime pace, all at once, through one real appliance (its default precision: int8 on CPU) and
compared with offline float32 faster-whisper on the same files, model and decode profile, so the
bound covers what the precision costs too: pooled WER within 1 point of offline (DESIGN.md,
targets), and no file more than 2 words worse than offline (a lost or garbled utterance shows there;
a single changed word on a 14-word sentence is 7 points, which is why the per-file bound counts
words). Streaming cuts audio differently from offline, so
single words move both ways from file to file: bench/wer.py prints them.

The first batch with pink noise mixed in at 5 dB SNR (made here, seeded: clients/noise.py) is
streamed too, through a float32 appliance, and held to offline decoding of the same noisy files.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from clients.corpus import SHARED_AUDIO, offline_transcribe, word_errors
from clients.dev_set import dev_set, sample
from clients.noise import noisy_copies
from tests.conftest import finals_text, stream_file
from tests.inprocess import InProcessAppliance

pytestmark = pytest.mark.corpus

CI_FILES_FROM_MORE = 4  # sentences of ../shared/audio/more (the first by name: two ARCTIC, two LibriSpeech)
_DEV_SET = dev_set()
CORPUS = ([r for r in _DEV_SET if r.batch == "first"]
          + sample([r for r in _DEV_SET if r.batch == "more"], CI_FILES_FROM_MORE))
if not CORPUS:
    pytest.skip(f"no speech corpus at {SHARED_AUDIO} (a fresh clone without ../shared)", allow_module_level=True)


@pytest.fixture(scope="module")
def streamed():
    # All files at once is far past this box's capacity (docs/capacity.md): this is an accuracy
    # test, so finals may wait as long as they need (no decode_queue_timeout_sec).
    # Every file streams from this one host: the per-IP session cap (16) is lifted too.
    env = {"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0", "STT_SERVER_MAX_SESSIONS_PER_IP": "0"}
    with InProcessAppliance(env=env) as server, \
            ThreadPoolExecutor(len(CORPUS)) as pool:
        results = pool.map(lambda rec: stream_file(server.address, rec.path, realtime=True), CORPUS)
        return dict(zip((rec.path.name for rec in CORPUS), results, strict=True))


MAX_EXTRA_WORD_ERRORS_PER_FILE = 2
_offline = cache(offline_transcribe)  # each file once for both tests
MAX_POOLED_WER_POINTS_OVER_OFFLINE = 1.0


def _errors(streamed, recording) -> tuple[int, int, int]:
    """(streamed word errors, offline word errors, reference words)."""
    stream_errors, words = word_errors(recording.reference, finals_text(streamed[recording.path.name]))
    offline_errors, _ = word_errors(recording.reference, _offline(recording.path))
    return stream_errors, offline_errors, words


@pytest.mark.parametrize("recording", CORPUS, ids=lambda rec: rec.path.stem)
def test_no_file_streams_more_than_two_words_worse_than_offline(streamed, recording):
    stream_errors, offline_errors, _ = _errors(streamed, recording)
    assert stream_errors <= offline_errors + MAX_EXTRA_WORD_ERRORS_PER_FILE, \
        finals_text(streamed[recording.path.name])


def test_pooled_streaming_wer_within_one_point_of_offline(streamed):
    totals = [sum(column) for column in zip(*(_errors(streamed, rec) for rec in CORPUS), strict=True)]
    stream_errors, offline_errors, words = totals
    assert 100 * stream_errors / words <= 100 * offline_errors / words + MAX_POOLED_WER_POINTS_OVER_OFFLINE


def test_long_recording_gives_ordered_finals_covering_the_file(streamed):
    long_file = next(rec for rec in CORPUS if rec.path.name.startswith("long_en_"))
    finals = [r for r in streamed[long_file.path.name] if r.is_final]
    assert len(finals) >= 5
    assert [r.utterance_index for r in finals] == list(range(len(finals)))
    assert all(a.end_sec <= b.start_sec for a, b in pairwise(finals))
    assert finals[0].start_sec < 2.0 and finals[-1].end_sec > long_file.duration_sec - 3.0
    assert all(r.text for r in finals)


NOISY_SNR_DB = 5.0
MAX_NOISY_WER_POINTS_OVER_OFFLINE = 1.0


# The noisy run reads the first batch only, on a float32 server like the offline baseline: what it
# checks is the stream's handling of noise, and the clean test above already holds the int8 default
# to its bound. At int8 the first batch moved by 2-3 words between builds that changed nothing in
# its path (which words the Shakespeare reading's cuts touch, which window a batch mate gave a
# sentence), +1.0 to +1.6 points: too close to any bound to check anything. At float32 it reads 85
# against offline's 86 (two runs, 95c525d; 88 at fbc4d65), so 1.0 point (6 words) leaves room for a
# cut moving a word or two and still fails on a lost utterance. bench/wer.py measures the whole dev
# set in noise (docs/accuracy.md).
NOISY_CORPUS = [r for r in CORPUS if r.batch == "first"]


@pytest.fixture(scope="module")
def noisy_corpus():
    with tempfile.TemporaryDirectory(prefix="corpus-noise-") as workdir:
        yield noisy_copies(NOISY_CORPUS, "pink", NOISY_SNR_DB, Path(workdir))


def test_pooled_streaming_wer_in_noise_stays_near_offline_on_the_same_noisy_audio(noisy_corpus):
    """DESIGN.md's target is 0.5 point at 5 dB; this bound leaves room for which words a cut moves
    (bench/wer.py --noise pink --snr 5)."""
    env = {"STT_SERVER_DECODE_QUEUE_TIMEOUT_SEC": "0", "STT_SERVER_MAX_SESSIONS_PER_IP": "0",
           "STT_MODEL_COMPUTE_TYPE": "float32"}
    with InProcessAppliance(env=env) as server, ThreadPoolExecutor(4) as pool:
        streamed = list(pool.map(lambda path: finals_text(stream_file(server.address, path)), noisy_corpus))
    stream_errors = offline_errors = words = 0
    for recording, path, text in zip(NOISY_CORPUS, noisy_corpus, streamed, strict=True):
        errors, count = word_errors(recording.reference, text)
        stream_errors, words = stream_errors + errors, words + count
        offline_errors += word_errors(recording.reference, offline_transcribe(path))[0]
    assert 100 * stream_errors / words <= 100 * offline_errors / words + MAX_NOISY_WER_POINTS_OVER_OFFLINE, \
        (stream_errors, offline_errors, words)
