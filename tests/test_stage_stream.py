"""The whole stage chain under its async shell, in-process: real speech, VAD, model and scheduler."""

from __future__ import annotations

import asyncio

import pytest
import soundfile as sf

from appliance.errors import ApplianceError
from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.resources import BufferLedger
from appliance.scheduler import DecodeScheduler
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import StreamGate
from appliance.streaming.listeners import IgnoreStream
from appliance.streaming.resume import START, ResumePoint
from appliance.streaming.stream import Stream
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import AudioIn
from appliance.vad import SileroOnnx, VadStream
from clients.corpus import wer
from tests.stages import MODEL_ID, TICKETS, chunks, limits, settings, to_pcm16


class Heard(IgnoreStream):
    def __init__(self) -> None:
        self.audio_bytes = 0
        self.results = 0
        self.error: ApplianceError | None = None  # what ended the stream, when run_stream lets one through

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        self.audio_bytes += len(pcm16)

    def result_sent(self, result) -> None:
        self.results += 1


@pytest.fixture(scope="module")
def backend():
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True)


def run_stream(backend, pcm16: bytes, rate_hz: int, *, close_after: int | None = None,
               start: ResumePoint = START, observer=None, stream_limits: dict | None = None, **session_options):
    """Stream `pcm16` through the whole chain (chunks as fast as it reads them): (results, the
    ledger's bytes at the end, what the listener heard). `observer` sees every decode;
    `stream_limits` overrides limits (max_pending_per_stream=1: no audio is read while a decode runs)."""
    async def scenario():
        s = settings(**session_options)
        lim = limits(**(stream_limits or {}))
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0, observer=observer)
        ledger, heard = BufferLedger(None), Heard()
        claims = TICKETS.verify(s.token, s.session_id)

        def resume_ticket(point: ResumePoint) -> str:
            return TICKETS.issue_resume(claims, point.timeline_sec, point.next_utterance_index, ttl_sec=30)

        stream = Stream(s, lim, gate=StreamGate(s, lim), frontend=Frontend(VadStream(SileroOnnx())),
                        transcriber_factory=lambda deliver, progress: Transcriber(
                            s, scheduler, backend, deliver=deliver, on_progress=progress, max_pending=8),
                        ledger=ledger, listener=heard, start=start, resume_ticket=resume_ticket)

        async def audio():
            for i, piece in enumerate(chunks(pcm16, rate_hz)):
                if close_after is not None and i == close_after:
                    stream.close_input()
                yield AudioIn(session_id=s.session_id, pcm16=piece, sample_rate_hz=rate_hz)
                await asyncio.sleep(0)

        results = []
        try:
            async for result in stream.results(audio()):
                results.append(result)
        except ApplianceError as err:
            if close_after is None:
                raise
            heard.error = err
        scheduler.shutdown()
        await asyncio.sleep(0)
        return results, ledger.total_bytes, heard

    return asyncio.run(scenario())


def test_three_sentences_give_three_finals_and_the_ledger_returns_to_zero(backend, sentences):
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    pcm16 = to_pcm16(audio)
    results, ledger_bytes, heard = run_stream(backend, pcm16, rate_hz, attributes={"partial": "true"})
    finals = [r for r in results if r.is_final]
    assert [r.utterance_index for r in finals] == [0, 1, 2]
    assert wer(sentences.reference, " ".join(r.text for r in finals)) <= 0.15
    assert ledger_bytes == 0 and heard.audio_bytes == len(pcm16) and heard.results == len(results)


def test_closing_the_input_mid_sentence_still_sends_that_utterances_final(backend, sentences):
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    results, _, heard = run_stream(backend, to_pcm16(audio), rate_hz, close_after=20)  # 2 s: inside sentence one
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1 and "open" in finals[0].text.lower()
    # Then ERR1015, not a clean end: the client did not finish, the server did (a resuming client goes on).
    assert heard.error is not None and heard.error.code == "ERR1015"


def test_a_drained_resumable_stream_leaves_its_open_utterance_to_the_node_it_resumes_on(backend, sentences):
    """Its client resends that utterance elsewhere from the last resume point: a final here for the
    part heard so far would split the utterance in two."""
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    pcm16 = to_pcm16(audio)
    whole, _, _ = run_stream(backend, pcm16, rate_hz, attributes={"resumable": "true"})
    second_sentence = next(r for r in whole if r.is_final and r.utterance_index == 1)
    mid_second = round((second_sentence.start_sec + second_sentence.end_sec) / 2 * 10)  # 100 ms chunks
    results, _, heard = run_stream(backend, pcm16, rate_hz, attributes={"resumable": "true"},
                                   close_after=mid_second)
    assert [r.utterance_index for r in results if r.is_final] == [0]
    last_ticketed = [r for r in results if r.resume_token][-1]
    assert last_ticketed.resume_from_sec <= second_sentence.start_sec
    assert heard.error is not None and heard.error.code == "ERR1015" and "not finalised" in heard.error.message


def test_a_streams_levels_carry_the_key_given_not_its_session_id(backend):
    async def scenario():
        s, lim = settings(), limits()
        scheduler = DecodeScheduler(max_in_flight=1)
        stream = Stream(s, lim, gate=StreamGate(s, lim), frontend=Frontend(VadStream(SileroOnnx())),
                        transcriber_factory=lambda deliver, progress: Transcriber(s, scheduler, backend,
                                                                                  deliver=deliver),
                        ledger=BufferLedger(None), listener=Heard())
        levels = stream.levels("abc123")
        scheduler.shutdown()
        return s, levels

    s, levels = asyncio.run(scenario())
    assert levels.stream == "abc123" and s.session_id not in str(levels)
    assert (levels.model_id, levels.utterances, levels.pending_decodes, levels.buffered_bytes) == (MODEL_ID, 0, 0, 0)


def resume_claims(result):
    return TICKETS.verify(result.resume_token, result.session_id)


def test_every_final_carries_a_resume_ticket_for_the_audio_after_it(backend, sentences):
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    results, _, _ = run_stream(backend, to_pcm16(audio), rate_hz)
    finals = [r for r in results if r.is_final]
    assert len(finals) == 3 and not any(r.is_checkpoint for r in results)  # checkpoints are opt-in
    for final in finals:
        claims = resume_claims(final)
        assert claims.is_resume and claims.resume_from_sec == final.resume_from_sec
        # The next utterance resumes after this final's speech (its own pre-roll may reach back a little).
        assert claims.next_utterance_index == final.utterance_index + 1
        assert final.end_sec - 0.05 <= claims.resume_from_sec
    assert finals[-1].resume_from_sec <= len(audio) / rate_hz


def test_a_resumable_session_gets_checkpoints_that_never_pass_an_unsent_final(backend, sentences):
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    results, _, heard = run_stream(backend, to_pcm16(audio), rate_hz, attributes={"resumable": "true"})
    checkpoints = [r for r in results if r.is_checkpoint]
    assert results[0].is_checkpoint and results[0].resume_from_sec == 0.0  # one as the stream attaches
    assert len(checkpoints) >= len(audio) / rate_hz / 2 - 1 and heard.results == len(results) - len(checkpoints)
    finals_so_far: list = []
    for result in results:
        if result.is_final:
            finals_so_far.append(result)
        elif result.is_checkpoint:
            claims = resume_claims(result)
            assert claims.next_utterance_index == len(finals_so_far) == result.utterance_index
            assert not result.text and claims.resume_from_sec == result.resume_from_sec
    points = [r.resume_from_sec for r in results if r.resume_token]
    assert points == sorted(points), "a resume point moved back"


def test_a_resumed_stream_continues_the_timeline_and_the_utterance_count(backend, sentences):
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    pcm16 = to_pcm16(audio)
    first, _, _ = run_stream(backend, pcm16, rate_hz)
    # Resume as a client would after the first final: its ticket's point, the audio from there on.
    point = ResumePoint(first[0].resume_from_sec, 1)
    offset = round(point.timeline_sec * rate_hz) * 2
    resumed, _, _ = run_stream(backend, pcm16[offset:], rate_hz, start=point)
    before, after = [r for r in first if r.is_final], [r for r in resumed if r.is_final]
    assert [r.utterance_index for r in after] == [1, 2]
    for original, again in zip(before[1:], after, strict=True):
        assert abs(again.start_sec - original.start_sec) <= 0.1 and abs(again.end_sec - original.end_sec) <= 0.1
        assert again.text == original.text
