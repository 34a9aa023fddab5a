"""Stage 4 (transcriber), in-process with the real bundled model and the real scheduler: finals,
the committed/unstable split of partials, overlap removal after a cut, dropped partials, auto-end."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.scheduler import DecodeScheduler
from appliance.streaming.events import FinalDue, PartialDue
from appliance.streaming.transcriber import StreamEnd, Transcriber
from appliance.streaming.types import RecognitionResult
from tests.stages import MODEL_ID, settings


@pytest.fixture(scope="module")
def backend():
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True)


def final(index: int, audio: np.ndarray, **flags) -> FinalDue:
    return FinalDue(index, audio, 0.0, audio.size / 16_000, flags.get("after_overlap", False),
                    flags.get("continues_speech", False))


def partial(index: int, audio: np.ndarray) -> PartialDue:
    return PartialDue(index, audio, 0.0, audio.size / 16_000, False, False)


def transcribe(backend, dues, *, one_at_a_time: bool = False, **session_options) -> list:
    """Submit `dues` in order to a transcriber on a fresh one-slot scheduler (each after the last
    one's outcome with `one_at_a_time`); everything it delivered."""
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        delivered: list = []
        transcriber = Transcriber(settings(**session_options), scheduler, backend, deliver=delivered.append,
                                  max_pending=8)
        for due in dues:
            transcriber.submit(due)
            if one_at_a_time:
                await asyncio.wait_for(transcriber.wait_idle(), timeout=120)
        await asyncio.wait_for(transcriber.wait_idle(), timeout=120)
        scheduler.shutdown()
        await asyncio.sleep(0)  # the dispatcher sees its cancellation
        return delivered

    return asyncio.run(scenario())


def test_a_final_carries_the_text_and_its_timeline(backend, prompt_audio):
    [result] = transcribe(backend, [final(0, prompt_audio)])
    assert isinstance(result, RecognitionResult) and result.is_final
    assert "front center" in result.text.lower().replace(",", "")
    assert result.committed_text == result.text and result.unstable_text == ""
    assert result.end_sec == pytest.approx(prompt_audio.size / 16_000, abs=1e-3)
    assert result.model_id == MODEL_ID and result.decoded_audio_sec > 0 and result.decode_latency_sec > 0
    assert 0.3 < result.confidence <= 1.0  # a clear recording the model gets right


def test_partials_of_an_utterance_agree_into_committed_text_that_the_final_keeps(backend, prompt_audio):
    dues = [partial(0, prompt_audio), partial(0, prompt_audio), final(0, prompt_audio)]
    results = transcribe(backend, dues, one_at_a_time=True, attributes={"partial": "true"})
    assert [r.is_final for r in results] == [False, False, True]
    first, second, last = results
    assert first.committed_text == "" and first.unstable_text  # nothing to agree with yet
    assert second.committed_text and "front" in second.committed_text.lower()  # two hypotheses agree
    assert last.text.startswith(second.committed_text)


def test_a_final_supersedes_its_queued_partials_and_reports_them_dropped(backend, prompt_audio):
    # One slot: the first final runs while the partial of utterance 1 waits; its final drops it.
    dues = [final(0, prompt_audio), partial(1, prompt_audio), final(1, prompt_audio)]
    results = transcribe(backend, dues, attributes={"partial": "true"})
    assert [(r.utterance_index, r.is_final) for r in results] == [(0, True), (1, True)]
    assert results[1].partials_dropped == 1 and results[0].partials_dropped == 0


def test_after_a_cut_the_overlap_words_are_not_repeated(backend, prompt_audio):
    # The second piece repeats the whole first one, as a cut's overlap would.
    results = transcribe(backend, [final(0, prompt_audio),
                                   final(1, prompt_audio, after_overlap=True, continues_speech=True)])
    assert results[0].text and results[1].text == ""


def test_auto_end_stops_after_the_first_final_with_text(backend, prompt_audio):
    delivered = transcribe(backend, [final(0, prompt_audio), final(1, prompt_audio)], vad_mode="auto")
    assert len(delivered) == 2 and delivered[0].is_final and isinstance(delivered[1], StreamEnd)


def test_a_decode_failure_ends_the_stream_with_err1016(backend, prompt_audio):
    broken = final(0, np.array(["not audio"]))  # the real backend cannot compute features for it
    delivered = transcribe(backend, [broken, final(1, prompt_audio)])
    assert len(delivered) == 1 and delivered[0].code == "ERR1016"


def test_a_final_on_the_audio_a_speculative_partial_decoded_reuses_it_without_decoding(backend, prompt_audio):
    guess = PartialDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, speculative=True)
    same = FinalDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, same_as_partial=True)
    partial_result, reused = transcribe(backend, [guess, same], one_at_a_time=True, attributes={"partial": "true"})
    assert reused.is_final and reused.text == partial_result.text and reused.decode_latency_sec == 0.0
    # a final on other audio (speech came after the guess), or not flagged, decodes as always
    longer = np.concatenate([prompt_audio, prompt_audio])
    other = FinalDue(0, longer, 0.0, longer.size / 16_000, False, False, same_as_partial=True)
    _, decoded = transcribe(backend, [guess, other], one_at_a_time=True, attributes={"partial": "true"})
    assert decoded.is_final and decoded.decode_latency_sec > 0
    _, decoded = transcribe(backend, [guess, final(0, prompt_audio)], one_at_a_time=True,
                            attributes={"partial": "true"})
    assert decoded.decode_latency_sec > 0
    # a word-timed session reuses it too: the speculative partial was aligned (its words are kept
    # for the final, not sent on the partial), so the final has words and the plain final's text
    guessed, reused = transcribe(backend, [guess, same], one_at_a_time=True,
                                 attributes={"partial": "true", "word_timestamps": "true"})
    assert reused.decode_latency_sec == 0.0 and reused.text == partial_result.text and not guessed.words
    assert " ".join(w.word for w in reused.words) == reused.text
    assert all(0.0 <= w.start_sec <= w.end_sec <= reused.end_sec for w in reused.words)
    assert all(w.probability > 0 for w in reused.words)  # aligned, not the evenly spread estimate


def submit_while_running(backend, first, *then, slots: int = 1, **session_options):
    """Submit `first`, let it start on a slot, then submit `then` while it runs: (everything
    delivered, decodes the scheduler ran, the stream's queued audio bytes at the end)."""
    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=slots, queue_timeout_sec=0)
        delivered: list = []
        transcriber = Transcriber(settings(**session_options), scheduler, backend, deliver=delivered.append,
                                  max_pending=8)
        transcriber.submit(first)
        while scheduler.in_flight == 0:
            await asyncio.sleep(0.001)
        for due in then:
            transcriber.submit(due)
        await asyncio.wait_for(transcriber.wait_idle(), timeout=120)
        while scheduler.in_flight:  # a superseded partial finishes in its thread, unheard
            await asyncio.sleep(0.01)
        scheduler.shutdown()
        await asyncio.sleep(0)
        return delivered, scheduler.stats.decodes, transcriber.queued_audio_bytes

    return asyncio.run(scenario())


def test_a_speculation_the_decoder_is_unsure_of_is_decoded_again_as_its_final(prompt_audio):
    # On the shipped bucketed window a final the decoder is unsure of gets a second look on the
    # full window (tiny.en hears "Front Center" at ~0.61 on 10 s); the speculative partial had one
    # look only, so its reading may not stand for the final, which decodes in its own right.
    looking = FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path),
                                   english_only=True, encode_window="bucketed")
    guess = PartialDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, speculative=True)
    same = FinalDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, same_as_partial=True)
    [plain] = transcribe(looking, [final(0, prompt_audio)])
    [after_guess] = transcribe(looking, [guess, same], one_at_a_time=True)
    assert after_guess.decode_latency_sec > 0 and after_guess.text == plain.text
    assert after_guess.confidence == plain.confidence > 0
    # arriving while the speculation decodes, it waits for it, then decodes after all
    delivered, decodes, _ = submit_while_running(looking, guess, same)
    assert [r.text for r in delivered] == [plain.text] and decodes == 2


def test_a_final_that_comes_while_its_speculative_partial_runs_waits_for_that_hypothesis(backend, prompt_audio):
    guess = PartialDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, speculative=True)
    same = FinalDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, same_as_partial=True)
    delivered, decodes, queued_bytes = submit_while_running(backend, guess, same, attributes={"partial": "true"})
    [result] = delivered  # the partial's hypothesis went out as the final, not as a partial
    assert result.is_final and "front center" in result.text.lower().replace(",", "")
    assert decodes == 1 and result.decode_latency_sec > 0 and queued_bytes == 0


def test_a_word_timed_final_that_adopts_its_running_speculation_carries_words(backend, prompt_audio):
    guess = PartialDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, speculative=True)
    same = FinalDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, same_as_partial=True)
    delivered, decodes, _ = submit_while_running(backend, guess, same,
                                                 attributes={"partial": "true", "word_timestamps": "true"})
    [result] = delivered
    assert result.is_final and decodes == 1 and "front center" in result.text.lower().replace(",", "")
    assert " ".join(w.word for w in result.words) == result.text
    assert all(0.0 <= w.start_sec <= w.end_sec <= result.end_sec and w.probability > 0 for w in result.words)


def test_a_final_does_not_wait_for_a_running_partial_it_supersedes(backend, prompt_audio):
    longer = np.tile(prompt_audio, 3)  # a long partial decode, so the final is sure to come while it runs
    delivered, decodes, queued_bytes = submit_while_running(backend, partial(0, longer), final(0, prompt_audio),
                                                            slots=2, attributes={"partial": "true"})
    [result] = delivered
    assert result.is_final and result.partials_dropped == 1 and "front center" in result.text.lower().replace(",", "")
    assert decodes == 2 and queued_bytes == 0  # both ran, on two slots; nothing left on the ledger


class PromptRecorder:
    """The real backend, noting the prompt each decode was given."""

    def __init__(self, backend):
        self._backend = backend
        self.prompts: list[str | None] = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def transcribe(self, audio, options, **kwargs):
        self.prompts.append(options.initial_prompt)
        return self._backend.transcribe(audio, options, **kwargs)


def test_in_noise_the_previous_final_is_context_for_the_next_utterance_if_it_ended_just_before(
        backend, prompt_audio):
    seconds = prompt_audio.size / 16_000

    def utterance(index: int, start_sec: float, in_noise: bool) -> FinalDue:
        return FinalDue(index, prompt_audio, start_sec, start_sec + seconds, False, False, in_noise)

    recorder = PromptRecorder(backend)
    results = transcribe(recorder, [utterance(0, 0.0, True), utterance(1, seconds + 1.0, True),
                                    utterance(2, 3 * seconds + 10.0, True), utterance(3, 4 * seconds + 11.0, False)],
                         one_at_a_time=True)
    first_text = results[0].text
    # utterance 1 follows 1 s after a final in noise: prompted with its text; 2 comes 10 s later, and 3
    # is clean speech: neither is
    assert recorder.prompts == [None, first_text, None, None]  # in noise, after a silence: the stop stays


def test_the_next_utterance_speculating_while_a_final_waits_for_its_own_speculation_changes_nothing(
        backend, prompt_audio):
    longer = np.tile(prompt_audio, 3)
    seconds = longer.size / 16_000

    def guess(index, start_sec, audio):
        return PartialDue(index, audio, start_sec, start_sec + audio.size / 16_000, False, False, speculative=True)

    def same(index, start_sec, audio):
        return FinalDue(index, audio, start_sec, start_sec + audio.size / 16_000, False, False, same_as_partial=True)
    # utterance 0's final waits for its running speculation while utterance 1 speculates behind it
    delivered, decodes, queued_bytes = submit_while_running(
        backend, guess(0, 0.0, longer), same(0, 0.0, longer), guess(1, seconds + 1, prompt_audio),
        attributes={"partial": "true"})
    assert [(r.utterance_index, r.is_final) for r in delivered] == [(0, True), (1, False)]
    assert delivered[0].end_sec == pytest.approx(seconds, abs=1e-3)  # utterance 0's own hypothesis
    assert decodes == 2 and queued_bytes == 0


def test_a_finals_only_session_never_hears_its_speculation_and_its_final_takes_it(backend, prompt_audio):
    guess = PartialDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, speculative=True)
    same = FinalDue(0, prompt_audio, 0.0, prompt_audio.size / 16_000, False, False, same_as_partial=True)
    [reused] = transcribe(backend, [guess, same], one_at_a_time=True)  # no partial goes out
    assert reused.is_final and reused.decode_latency_sec == 0.0 and "front" in reused.text.lower()
    [plain] = transcribe(backend, [final(0, prompt_audio)])
    assert reused.text == plain.text and reused.partials_dropped == 0
    # the final arrives while the speculation decodes: it waits for that hypothesis
    delivered, decodes, _ = submit_while_running(backend, guess, same)
    assert [r.text for r in delivered] == [plain.text] and decodes == 1
    # a speculation the final supersedes is no partial the client asked for: none reported dropped
    longer = np.tile(prompt_audio, 3)
    other = PartialDue(0, longer, 0.0, longer.size / 16_000, False, False, speculative=True)
    delivered, _, _ = submit_while_running(backend, other, final(0, prompt_audio), slots=2)
    assert [r.text for r in delivered] == [plain.text] and delivered[0].partials_dropped == 0
