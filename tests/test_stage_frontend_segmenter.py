"""Stages 2 and 3 (frontend, segmenter), in-process on real speech: espeak-ng sentences with pauses
through the real resampler and Silero VAD, then endpointing, cuts and partial cadence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from appliance.streaming.events import FinalDue, PartialDue
from appliance.streaming.frontend import Frontend
from appliance.streaming.segmenter import Segmenter, SegmenterConfig, cut_search_frames
from appliance.vad import FRAME_SAMPLES, SileroOnnx, VadStream
from clients.noise import noise_like
from tests import speech
from tests.stages import Backlog, chunks, limits, settings, to_pcm16


@pytest.fixture(scope="module")
def silero() -> SileroOnnx:
    return SileroOnnx()


@pytest.fixture(scope="module")
def spoken(sentences) -> tuple[bytes, int]:
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    return to_pcm16(audio), rate_hz


def run_frontend(frontend: Frontend, pcm16: bytes, rate_hz: int):
    batches = [frontend.frames(frontend.to_model_rate(c, rate_hz)) for c in chunks(pcm16, rate_hz)]
    batches.append(frontend.frames(frontend.flush()))
    return (np.concatenate([b.frames for b in batches]), np.concatenate([b.probabilities for b in batches]),
            np.concatenate([b.rms for b in batches]))


def segment(silero, pcm16: bytes, rate_hz: int, backlog: Backlog | None = None, **overrides):
    session_options = overrides.pop("session", {})
    config = SegmenterConfig.for_session(settings(**session_options), limits(**overrides))
    segmenter = Segmenter(config, backlog or Backlog())
    frames, probs, levels = run_frontend(Frontend(VadStream(silero)), pcm16, rate_hz)
    dues = [segmenter.push(f, float(p), float(r)) for f, p, r in zip(frames, probs, levels, strict=True)]
    dues.append(segmenter.finish())
    return [d for d in dues if d is not None]


def test_frontend_resamples_to_16k_frames_and_the_vad_hears_speech_not_pauses(silero, spoken, sentences):
    pcm16, rate_hz = spoken
    frames, probs, levels = run_frontend(Frontend(VadStream(silero)), pcm16, rate_hz)
    expected_frames = (len(pcm16) // 2) * 16_000 // rate_hz // FRAME_SAMPLES
    assert frames.shape[1] == FRAME_SAMPLES and abs(len(frames) - expected_frames) <= 1
    lead = slice(0, int(0.4 * 16_000 / FRAME_SAMPLES))  # the file opens with 0.5 s of silence
    assert probs[lead].max() < 0.2 and levels[lead].max() < 1e-3
    assert (probs > 0.5).sum() * FRAME_SAMPLES / 16_000 > 3.0  # seconds of speech in three sentences
    assert levels[probs > 0.5].mean() > 0.01


def test_frontend_makes_no_frames_from_nothing(silero):
    frontend = Frontend(VadStream(silero))
    assert len(frontend.frames(np.zeros(0, dtype=np.float32))) == 0
    assert len(frontend.frames(np.zeros(100, dtype=np.float32))) == 0  # waits for a whole frame


def test_each_sentence_becomes_one_final_in_timeline_order(silero, spoken, sentences):
    dues = segment(silero, *spoken, speculative_finals="never")
    assert all(isinstance(d, FinalDue) for d in dues)
    assert [d.utterance_index for d in dues] == [0, 1, 2]
    for earlier, later in itertools.pairwise(dues):
        assert earlier.end_sec < later.start_sec
    assert dues[0].start_sec < 0.6  # pre-roll keeps the first syllable
    for due in dues:
        assert 1.0 < due.end_sec - due.start_sec < 4.0
        assert due.audio.size >= (due.end_sec - due.start_sec) * 16_000 * 0.95
        assert not due.after_overlap and not due.continues_speech


def test_a_finals_only_session_speculates_on_each_finals_audio_as_silence_begins(silero, spoken):
    dues = segment(silero, *spoken)
    finals = [d for d in dues if isinstance(d, FinalDue)]
    guesses = [d for d in dues if isinstance(d, PartialDue)]
    assert [d.utterance_index for d in finals] == [0, 1, 2]
    assert all(g.speculative for g in guesses) and [g.utterance_index for g in guesses] == [0, 1, 2]
    for guess, final in zip(guesses, finals, strict=True):  # the very audio, and the final says so
        assert dues.index(guess) < dues.index(final) and final.same_as_partial
        assert np.array_equal(guess.audio, final.audio) and guess.start_sec == final.start_sec
    busy = segment(silero, *spoken, backlog=Backlog(partial_waiting=True))  # a partial waits: none
    assert [type(d) for d in busy] == [FinalDue] * 3 and not any(d.same_as_partial for d in busy)


def test_partials_come_on_the_cadence_and_wait_while_one_is_queued(silero, spoken):
    dues = segment(silero, *spoken, session={"attributes": {"partial": "true"}}, partial_interval_sec=0.5)
    partials = [d for d in dues if isinstance(d, PartialDue)]
    finals = [d for d in dues if isinstance(d, FinalDue)]
    assert len(finals) == 3 and len(partials) >= 3
    for p in partials:  # a partial covers its utterance so far and precedes that utterance's final
        final = finals[p.utterance_index]
        assert dues.index(p) < dues.index(final) and p.start_sec == final.start_sec
    busy = segment(silero, *spoken, backlog=Backlog(partial_waiting=True),
                   session={"attributes": {"partial": "true"}}, partial_interval_sec=0.5)
    assert [type(d) for d in busy] == [FinalDue] * 3


def test_the_first_partial_comes_soon_after_onset_and_the_cadence_stretches_under_load(silero, spoken):
    cadence = {"partial_interval_sec": 0.5, "partial_interval_max_sec": 3.0, "partial_first_sec": 0.5}
    partial_session = {"attributes": {"partial": "true"}}
    light = segment(silero, *spoken, session=partial_session, **cadence)
    preroll_sec = limits().preroll_sec

    def regular_partials(dues, index):
        return [d for d in dues if isinstance(d, PartialDue) and not d.speculative and d.utterance_index == index]

    for final in (d for d in light if isinstance(d, FinalDue)):
        partials = regular_partials(light, final.utterance_index)
        onset_sec = final.start_sec + preroll_sec  # the buffer opens with the pre-roll
        assert partials and partials[0].end_sec - onset_sec == pytest.approx(0.5, abs=0.04)
        gaps = [later.end_sec - earlier.end_sec for earlier, later in itertools.pairwise(partials)]
        assert all(gap >= 0.5 - 1e-6 for gap in gaps)
    saturated = segment(silero, *spoken, backlog=Backlog(decode_demand=1.0), session=partial_session, **cadence)
    for final in (d for d in saturated if isinstance(d, FinalDue)):
        partials = regular_partials(saturated, final.utterance_index)
        # at full demand the first partial waits 0.5 + (3.0 - 0.5) s: these sentences are shorter
        assert all(p.end_sec - final.start_sec - preroll_sec >= 3.0 - 1e-6 for p in partials)
    def count(dues):
        return sum(isinstance(d, PartialDue) for d in dues)

    assert count(saturated) < count(light)


def test_without_endpointing_a_long_utterance_is_cut_at_the_buffer_cap_between_words(silero, spoken):
    dues = segment(silero, *spoken, session={"attributes": {"emit_final_on_vad": "false"}}, max_buffer_sec=4.0,
                   buffer_overlap_sec=0.5)
    assert len(dues) >= 3 and all(isinstance(d, FinalDue) for d in dues)
    assert all(d.end_sec - d.start_sec <= 4.0 + 1e-6 for d in dues)
    cut = dues[1]
    assert cut.continues_speech and cut.after_overlap
    assert cut.start_sec == pytest.approx(dues[0].end_sec - 0.5, abs=0.04)  # the overlap before the cut


def test_a_cut_in_noise_reaches_back_past_word_gaps_to_the_pause(silero, spoken, tmp_path):
    """The three sentences with their pauses, then the same three spoken without pauses, under white
    noise at 10 dB, and a 14 s cap. The pause after the first part ends 2 s before the cap, the word
    gaps of the run come later: looking back a quarter of the cap (3.5 s), the cut finds the pause
    instead of splitting the run at a gap between two of its words."""
    pcm16, rate_hz = spoken
    paused = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768
    run_wav = speech.sentences_with_pauses(tmp_path, pause_sec=0.0, lead_sec=0.0, trail_sec=0.5, name="run.wav")
    run, _ = sf.read(str(run_wav.path), dtype="float32")
    clean = np.concatenate([paused, run])
    noise = noise_like("white", clean.size, rate_hz, np.random.default_rng(5), [])
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) / 10 ** (10 / 20)
    dues = segment(silero, to_pcm16(clean + noise), rate_hz, max_buffer_sec=14.0,
                   session={"attributes": {"emit_final_on_vad": "false"}})
    pause_end_sec = paused.size / rate_hz  # the fixture's last second is its trailing pause
    assert pause_end_sec - 1.0 <= dues[0].end_sec <= pause_end_sec + 0.05


def test_a_cut_looks_back_a_quarter_of_the_cap_and_at_least_1_5_s():
    assert cut_search_frames(20 * 16_000) * FRAME_SAMPLES / 16_000 == pytest.approx(5.0, abs=0.02)
    assert cut_search_frames(4 * 16_000) * FRAME_SAMPLES / 16_000 == pytest.approx(1.5, abs=0.02)


def test_silence_alone_makes_nothing_due(silero):
    silence = to_pcm16(np.zeros(16_000 * 5, dtype=np.float32))
    assert segment(silero, silence, 16_000, session={"attributes": {"partial": "true"}}) == []


def test_a_partial_at_the_start_of_silence_covers_exactly_the_finals_audio(silero, spoken):
    """With partials on, once silence has lasted tail_sec the segmenter decodes what the final will
    decode; when no speech follows, the final says so (same_as_partial) so it can reuse it."""
    dues = segment(silero, *spoken, session={"attributes": {"partial": "true"}})
    finals = [d for d in dues if isinstance(d, FinalDue)]
    speculative = [d for d in dues if isinstance(d, PartialDue) and d.speculative]
    assert len(finals) == 3 and finals[-1].same_as_partial
    for final in finals:
        if final.same_as_partial:
            guess = [d for d in speculative if d.utterance_index == final.utterance_index][-1]
            assert np.array_equal(guess.audio, final.audio) and dues.index(guess) < dues.index(final)
    # no partials, and finals-only speculation off: no speculation
    without = segment(silero, *spoken, speculative_finals="never")
    assert not any(isinstance(d, PartialDue) for d in without) and not any(d.same_as_partial for d in without)


def test_speech_in_noise_is_flagged_for_context_and_clean_speech_is_not(silero, spoken):
    pcm16, rate_hz = spoken
    speech = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768
    noise = noise_like("pink", speech.size, rate_hz, np.random.default_rng(3), [])
    noise *= np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2)) / 10 ** (5 / 20)  # 5 dB SNR
    noisy = [d for d in segment(silero, to_pcm16(speech + noise), rate_hz) if isinstance(d, FinalDue)]
    assert len(noisy) >= 2 and noisy[-1].in_noise  # once the floor has been heard
    assert not any(d.in_noise for d in segment(silero, pcm16, rate_hz))
