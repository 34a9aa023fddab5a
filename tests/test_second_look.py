"""The second look (window_check.SECOND_LOOK_BELOW): a final the decoder is unsure of on its short
encoder window is decoded again on the full one and keeps the more confident reading. Real model,
Debian's spoken prompts."""

from __future__ import annotations

import asyncio
import re

import pytest

from appliance.config import default_config_paths, load_config
from appliance.models.backends.base import segments_confidence
from appliance.models.backends.faster_whisper import FULL_WINDOW_FRAMES, FasterWhisperBackend
from appliance.models.backends.window_check import SECOND_LOOK_BELOW
from appliance.models.store import resolve_model
from tests import speech

OPTIONS = load_config(*default_config_paths()).decode_profiles["realtime"]


@pytest.fixture(scope="module", autouse=True)
def _alsa_prompts():
    if not (speech.ALSA_DIR / "Side_Left.wav").exists():
        pytest.skip("Debian's alsa-utils prompts are not installed")


def _backend(encode_window: str = "bucketed", second_look_below: float = 0) -> FasterWhisperBackend:
    return FasterWhisperBackend(model_id="cpu-tiny.en", model_path=str(resolve_model("tiny.en").path),
                                english_only=True, encode_window=encode_window, second_look_below=second_look_below)


def _confidence(transcript) -> float:
    return segments_confidence(transcript.segments)


def _text(transcript) -> list[str]:
    return [s.text.strip() for s in transcript.segments]


def test_an_unsure_final_gets_a_second_look_on_the_full_window(prompt_audio):
    # tiny.en float32 hears "Front Center" on its 10 s bucket at confidence ~0.61 and on the full
    # window at ~0.70; "Side Left" at ~0.73 on its bucket. Only the unsure one is looked at twice.
    sure = speech.alsa_prompt_16k("Side_Left.wav")
    backend = _backend(second_look_below=SECOND_LOOK_BELOW)
    once = _backend().transcribe(prompt_audio, OPTIONS, language=None, task="transcribe")
    full = _backend("full").transcribe(prompt_audio, OPTIONS, language=None, task="transcribe")
    assert _confidence(once) < min(SECOND_LOOK_BELOW, _confidence(full))  # the premise, on this model

    unsure, confident = backend.transcribe_batch([prompt_audio, sure], OPTIONS, language=None, task="transcribe")
    assert unsure.extra["encode_frames"] == FULL_WINDOW_FRAMES
    # (the batched path scores a reading a little differently from faster-whisper's own)
    assert re.fullmatch(rf"unsure 0\.[0-9]+, full window {_confidence(unsure):.2f}", unsure.extra["window_fallback"])
    assert _text(unsure) == _text(full)
    assert "window_fallback" not in confident.extra and confident.extra["encode_frames"] == 1000
    assert backend.wants_second_look(once) and not backend.wants_second_look(unsure)
    # a partial never pays for it, and a single decode takes the same path as a batch
    partial = backend.transcribe(prompt_audio, OPTIONS, language=None, task="transcribe", provisional=True)
    assert partial.extra["encode_frames"] == 1000 and "window_fallback" not in partial.extra
    single = backend.transcribe(prompt_audio, OPTIONS, language=None, task="transcribe")
    assert single.extra["encode_frames"] == FULL_WINDOW_FRAMES
    assert single.segments[0].text.strip() == unsure.segments[0].text.strip()


def test_a_second_look_keeps_the_short_window_reading_when_that_one_is_surer():
    # "Side Left": ~0.73 on its bucket, ~0.70 on the full window; under a line above both, the
    # second look runs and the bucket's reading stands.
    audio = speech.alsa_prompt_16k("Side_Left.wav")
    once = _backend().transcribe(audio, OPTIONS, language=None, task="transcribe")
    looked = _backend(second_look_below=0.9).transcribe(audio, OPTIONS, language=None, task="transcribe")
    assert looked.extra["encode_frames"] == 1000 and looked.extra["window_fallback"].startswith("unsure")
    assert _text(looked) == _text(once)
    assert _confidence(looked) == _confidence(once)


def _finals_at_once(backend, audios: list, slots: int) -> list:
    """Each audio a final of its own stream, all due at once on a `slots`-slot scheduler: the
    transcripts, in order."""
    from appliance.scheduler import DecodeScheduler

    async def scenario():
        scheduler = DecodeScheduler(max_in_flight=slots, max_batch_size=4, queue_timeout_sec=0)
        outcomes: dict[int, object] = {}

        def done(label, transcript, error):
            outcomes[label] = error or transcript

        for i, audio in enumerate(audios):
            queue = scheduler.open_stream(f"s{i}", backend, language=None, task="transcribe", on_done=done)
            queue.submit(audio, is_final=True, payload=i, options=OPTIONS)
        for _ in range(3000):  # bounded: 60 s
            if len(outcomes) == len(audios):
                break
            await asyncio.sleep(0.02)
        scheduler.shutdown()
        return [outcomes[i] for i in range(len(audios))]

    return asyncio.run(scenario())


def test_finals_look_twice_only_while_the_box_has_room(prompt_audio):
    # Alone on an idle scheduler an unsure final gets its second look; ten due at once on two
    # slots keep one look each (DecodeScheduler.room_for_second_look): in a noisy hall at full load
    # the second look would cost 2-3x the encoder per final and finals would come late or not at all.
    backend = _backend(second_look_below=SECOND_LOOK_BELOW)
    [alone] = _finals_at_once(backend, [prompt_audio], slots=2)
    assert alone.extra["window_fallback"].startswith("unsure") and alone.extra["encode_frames"] == FULL_WINDOW_FRAMES
    busy = _finals_at_once(backend, [prompt_audio.copy() for _ in range(10)], slots=2)
    assert all("window_fallback" not in t.extra and t.extra["encode_frames"] == 1000 for t in busy)
    once = _backend().transcribe(prompt_audio, OPTIONS, language=None, task="transcribe")
    assert {tuple(_text(t)) for t in busy} == {tuple(_text(once))}
