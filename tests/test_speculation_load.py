"""`server.speculative_finals`: a finals-only stream speculates (decodes its final's audio once its
silence reaches `tail_sec`) always, never, or, by default, only while the decoders have room.

The segmenter's choice is checked on real speech and VAD with the decoders' state held still; the
whole stage chain then runs on the real tiny.en model and scheduler: at low load the final is its
speculation (no final decode runs), under `never` nothing is speculated, and with both decode slots
busy nothing is speculated and every final is still decoded and delivered with the same text.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import soundfile as sf

from appliance.config import ConfigError, default_config_paths, load_config
from appliance.models.backends.faster_whisper import FasterWhisperBackend
from appliance.models.store import resolve_model
from appliance.resources import BufferLedger
from appliance.scheduler import DecodeScheduler
from appliance.scheduler.observer import DecodeObserver
from appliance.streaming.events import FinalDue, PartialDue
from appliance.streaming.frontend import Frontend
from appliance.streaming.gate import StreamGate
from appliance.streaming.listeners import IgnoreStream
from appliance.streaming.resume import START
from appliance.streaming.segmenter import Segmenter, SegmenterConfig
from appliance.streaming.stream import Stream
from appliance.streaming.transcriber import Transcriber
from appliance.streaming.types import AudioIn
from appliance.vad import SileroOnnx, VadStream
from tests.stages import MODEL_ID, TICKETS, Backlog, chunks, limits, settings, to_pcm16

OPTIONS = load_config(*default_config_paths()).decode_profiles["realtime"]


@pytest.fixture(scope="module")
def silero() -> SileroOnnx:
    return SileroOnnx()


@pytest.fixture(scope="module")
def spoken(sentences) -> tuple[np.ndarray, int]:
    audio, rate_hz = sf.read(str(sentences.path), dtype="float32")
    return audio, rate_hz


@pytest.fixture(scope="module")
def backend() -> FasterWhisperBackend:
    return FasterWhisperBackend(model_id=MODEL_ID, model_path=str(resolve_model("tiny.en").path), english_only=True,
                                pool_size=2)


def speculations(silero, spoken, mode: str, room: bool, session: dict | None = None) -> int:
    audio, rate_hz = spoken
    config = SegmenterConfig.for_session(settings(**(session or {})), limits(speculative_finals=mode))
    segmenter = Segmenter(config, Backlog(decode_room=room))
    frontend = Frontend(VadStream(silero))
    dues = []
    for piece in chunks(to_pcm16(audio), rate_hz):
        batch = frontend.frames(frontend.to_model_rate(piece, rate_hz))
        dues += [segmenter.push(f, p, r) for f, p, r in zip(batch.frames, batch.probabilities.tolist(),
                                                            batch.rms.tolist(), strict=True)]
    dues.append(segmenter.finish())
    assert sum(isinstance(d, FinalDue) for d in dues) == 3  # the endpoints never change
    return sum(isinstance(d, PartialDue) and d.speculative for d in dues)


def test_the_segmenter_speculates_as_the_key_and_the_decoders_room_say(silero, spoken):
    assert speculations(silero, spoken, "auto", room=True) == 3
    assert speculations(silero, spoken, "auto", room=False) == 0
    assert speculations(silero, spoken, "always", room=False) == 3
    assert speculations(silero, spoken, "never", room=True) == 0
    # sessions with partials keep speculating whatever the load: the speculation is their last partial
    assert speculations(silero, spoken, "never", room=False, session={"attributes": {"partial": "true"}}) >= 3


def test_the_key_is_validated():
    assert load_config(*default_config_paths(), env={}).server.speculative_finals == "auto"
    with pytest.raises(ConfigError, match="speculative_finals"):
        load_config(*default_config_paths(), env={"STT_SERVER_SPECULATIVE_FINALS": "sometimes"})


class Decodes(DecodeObserver):
    def __init__(self) -> None:
        self.finals = self.partials = self.dropped = 0

    def decode_done(self, *, is_final: bool, decode_sec: float, audio_sec: float, wait_sec: float) -> None:
        if is_final:
            self.finals += 1
        else:
            self.partials += 1

    def partials_dropped(self, count: int) -> None:
        self.dropped += count


class HeldBackend:
    """The real backend; decodes of the `held` audio arrays wait until `release` is set (they keep
    their decode slots busy meanwhile)."""

    def __init__(self, backend: FasterWhisperBackend):
        self._backend = backend
        self.held: set[int] = set()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def _wait(self, audios) -> None:
        if any(id(a) in self.held for a in audios):
            assert self.release.wait(timeout=60)

    def transcribe(self, audio, options, **kwargs):
        self._wait([audio])
        return self._backend.transcribe(audio, options, **kwargs)

    def transcribe_batch(self, audios, options, **kwargs):
        self._wait(audios)
        return self._backend.transcribe_batch(audios, options, **kwargs)


def stream_finals_only(backend, spoken, mode: str, *, saturate: bool = False):
    """One finals-only stream through the whole chain on a two-slot scheduler: (results, decodes,
    speculative decodes the stream submitted). With `saturate`, two other streams' finals hold both
    slots until the stream's audio has all been read."""
    audio, rate_hz = spoken
    held = HeldBackend(backend)
    decodes = Decodes()
    submitted: list = []

    class Watched(Transcriber):
        def submit(self, due) -> None:
            submitted.append(due)
            super().submit(due)

    async def scenario():
        s = settings()
        # saturated, reading goes on while finals queue; at low load no audio is read while a decode
        # runs, as at real time, where the pause gives the speculation the time to finish
        lim = limits(speculative_finals=mode, max_pending_per_stream=8 if saturate else 1)
        scheduler = DecodeScheduler(max_in_flight=2, queue_timeout_sec=0, max_batch_size=4, observer=decodes)
        others: dict[str, object] = {}
        if saturate:
            for name in ("a", "b"):
                clip = audio[: 2 * rate_hz].astype(np.float32).copy()
                held.held.add(id(clip))
                queue = scheduler.open_stream(name, held, language=None, task="transcribe",
                                              on_done=lambda label, t, e: others.__setitem__(label, e or t))
                queue.submit(clip, is_final=True, payload=name, options=OPTIONS)
            await asyncio.sleep(0.05)
            assert scheduler.in_flight == 2 and not scheduler.room_to_speculate()
        claims = TICKETS.verify(s.token, s.session_id)
        stream = Stream(s, lim, gate=StreamGate(s, lim), frontend=Frontend(VadStream(SileroOnnx())),
                        transcriber_factory=lambda deliver, progress: Watched(
                            s, scheduler, held, deliver=deliver, on_progress=progress, max_pending=8),
                        ledger=BufferLedger(None), listener=IgnoreStream(), start=START,
                        resume_ticket=lambda point: TICKETS.issue_resume(claims, point.timeline_sec,
                                                                         point.next_utterance_index, ttl_sec=30))

        async def pieces():
            for piece in chunks(to_pcm16(audio), rate_hz):
                yield AudioIn(session_id=s.session_id, pcm16=piece, sample_rate_hz=rate_hz)
                await asyncio.sleep(0)
            held.release.set()  # every frame has been pushed: let the held decodes go

        results = [r async for r in stream.results(pieces())]
        held.release.set()
        while len(others) < (2 if saturate else 0):
            await asyncio.sleep(0.01)
        scheduler.shutdown()
        return results

    results = asyncio.run(scenario())
    return results, decodes, sum(isinstance(d, PartialDue) and d.speculative for d in submitted)


def test_finals_only_streams_speculate_when_the_decoders_have_room_and_not_when_they_are_saturated(
        backend, spoken):
    plain, plain_decodes, plain_guesses = stream_finals_only(backend, spoken, "never")
    assert plain_guesses == 0 and (plain_decodes.finals, plain_decodes.partials) == (3, 0)
    assert [r.utterance_index for r in plain] == [0, 1, 2] and all(r.is_final for r in plain)

    # low load, auto: each final is the decode made as its silence began; no final decode runs
    light, light_decodes, light_guesses = stream_finals_only(backend, spoken, "auto")
    assert light_guesses == 3 and (light_decodes.finals, light_decodes.partials) == (0, 3)
    assert all(r.is_final and r.decode_latency_sec == 0.0 for r in light)
    assert [r.text for r in light] == [r.text for r in plain]

    # both slots busy, auto: nothing speculated, every final decoded and delivered, same text
    busy, busy_decodes, busy_guesses = stream_finals_only(backend, spoken, "auto", saturate=True)
    assert busy_guesses == 0 and busy_decodes.partials == 0 and busy_decodes.dropped == 0
    assert busy_decodes.finals == 3 + 2  # the stream's three and the two that held the slots
    assert [r.text for r in busy] == [r.text for r in plain]
