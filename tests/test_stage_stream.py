"""The whole stage chain under its async shell, in-process: real speech, VAD, model and scheduler."""

from __future__ import annotations

import asyncio

import pytest
import soundfile as sf

from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.resources import BufferLedger
from appliance.scheduler import DecodeScheduler
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import StreamGate
from appliance.streaming.listeners import IgnoreStream
from appliance.streaming.stream import Stream
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import AudioIn
from appliance.vad import SileroOnnx, VadStream
from clients.corpus import wer
from tests.stages import MODEL_ID, chunks, limits, settings, to_pcm16


class Heard(IgnoreStream):
    def __init__(self) -> None:
        self.audio_bytes = 0
        self.results = 0

    def audio_received(self, session_id: str, pcm16: bytes, sample_rate_hz: int) -> None:
        self.audio_bytes += len(pcm16)

    def result_sent(self, result) -> None:
        self.results += 1


@pytest.fixture(scope="module")
def backend():
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True)


def run_stream(backend, pcm16: bytes, rate_hz: int, *, close_after: int | None = None, **session_options):
    async def scenario():
        s = settings(**session_options)
        lim = limits()
        scheduler = DecodeScheduler(max_in_flight=1, queue_timeout_sec=0)
        ledger, heard = BufferLedger(None), Heard()
        stream = Stream(s, lim, gate=StreamGate(s, lim), frontend=Frontend(VadStream(SileroOnnx())),
                        transcriber_factory=lambda deliver, progress: Transcriber(
                            s, scheduler, backend, deliver=deliver, on_progress=progress, max_pending=8),
                        ledger=ledger, listener=heard)

        async def audio():
            for i, piece in enumerate(chunks(pcm16, rate_hz)):
                if close_after is not None and i == close_after:
                    stream.close_input()
                yield AudioIn(session_id=s.session_id, pcm16=piece, sample_rate_hz=rate_hz)
                await asyncio.sleep(0)

        results = [r async for r in stream.results(audio())]
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
    results, _, _ = run_stream(backend, to_pcm16(audio), rate_hz, close_after=20)  # 2 s: inside sentence one
    finals = [r for r in results if r.is_final]
    assert len(finals) == 1 and "open" in finals[0].text.lower()


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
