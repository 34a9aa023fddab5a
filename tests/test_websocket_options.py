"""The WebSocket door's pure parts: Deepgram's query options read and bounded, results shaped, times told
in the client's seconds when a Finalize added silence, linear16 frames carried across messages."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.errors import ApplianceError
from appliance.streaming.types import RecognitionResult
from appliance.streaming.word_timing import Word
from appliance.transport.websocket import results as shape
from appliance.transport.websocket.options import ENDPOINTING_MIN_MS, parse_options
from appliance.transport.websocket.pcm import Linear16

LOADED = ("cpu-tiny.en",)
BASE = "encoding=linear16&sample_rate=16000"


def test_the_options_agent_frameworks_send_by_default_are_taken():
    livekit = (BASE + "&model=nova-3&punctuate=true&smart_format=true&no_delay=true&interim_results=true"
               "&vad_events=true&channels=1&endpointing=25&filler_words=false&profanity_filter=false&numerals=false"
               "&mip_opt_out=false&keywords=Sonos:1.5&keyterm=kiosk+seven&language=en-US&tag=a&tag=b")
    options = parse_options(livekit, LOADED)
    assert options.model_id == "" and options.language == "en" and options.interim_results and options.vad_events
    assert options.endpointing_ms == ENDPOINTING_MIN_MS and options.speech_final
    assert options.hotwords == ("Sonos", "kiosk seven")
    assert parse_options(BASE + "&model=cpu-tiny.en&endpointing=false&language=multi", LOADED).model_id == "cpu-tiny.en"
    no_endpoint = parse_options(BASE + "&endpointing=false", LOADED)
    assert no_endpoint.endpointing_ms is None and not no_endpoint.speech_final
    assert parse_options(BASE + "&endpointing=800", LOADED).endpointing_ms == 800


@pytest.mark.parametrize("query, named", [
    (BASE + "&sample_rate=16000", "sample_rate"),
    (BASE + "&bogus=1", "bogus"),
    (BASE + "&channels=0", "channels"),
    (BASE + "&endpointing=10001", "endpointing"),
    (BASE + "&endpointing=-1", "endpointing"),
    ("encoding=linear16&sample_rate=1e5", "sample_rate"),
    (BASE + "&punctuate=yes", "punctuate"),
    (BASE + "&multichannel=true", "multichannel"),
    (BASE + "&language=en_US", "language"),
    (BASE + "&keyterm=a%00b", "keyterm"),
    (BASE + "&" + "&".join(f"keyterm=w{i}" for i in range(70)), "64"),  # 64 parameters bound the terms too
    (BASE + "&x=" + "y" * 300, "300"),
    ("a=1&" * 70, "64"),
])
def test_each_refusal_names_what_it_refused(query, named):
    with pytest.raises(ApplianceError) as refused:
        parse_options(query, LOADED)
    assert refused.value.code == "ERR1010" and named in refused.value.message, refused.value.message


def result(text: str, start: float, end: float, *, final: bool = True, words=()) -> RecognitionResult:
    return RecognitionResult(session_id="0" * 32, utterance_index=0, is_final=final, text=text, committed_text="",
                             unstable_text="", start_sec=start, end_sec=end, language="en", language_probability=1,
                             decode_latency_sec=0.1, model_id="cpu-tiny.en", words=tuple(words), confidence=0.8)


def test_results_are_shaped_as_deepgrams_and_times_leave_added_silence_out():
    timeline = shape.Timeline()
    timeline.add_silence(2.0, 0.8)  # a Finalize at 2.0 s of audio
    options = parse_options(BASE + "&punctuate=false", LOADED)
    words = [Word(" Go,", 2.9, 3.1, 0.9), Word(" forward.", 3.1, 3.6, 0.7)]
    message = shape.results(result(" Go, forward.", 2.85, 3.7, words=words), options, timeline, speech_final=True,
                            from_finalize=False, model_uuid="u")
    assert message["type"] == "Results" and message["is_final"] and message["speech_final"]
    assert (message["start"], message["duration"]) == (2.05, 0.85)
    alternative = message["channel"]["alternatives"][0]
    assert alternative["transcript"] == "go forward" and alternative["confidence"] == 0.8
    assert alternative["words"][0] == {"word": "go", "start": 2.1, "end": 2.3, "confidence": 0.9,
                                       "punctuated_word": "Go,"}
    assert message["metadata"]["request_id"] == "00000000-0000-0000-0000-000000000000"
    assert "from_finalize" not in message
    spread = shape.results(result("a b", 1.0, 2.0, final=False), parse_options(BASE, LOADED), shape.Timeline(),
                           speech_final=False, from_finalize=True, model_uuid="u")
    assert [(w["start"], w["end"]) for w in spread["channel"]["alternatives"][0]["words"]] == [(1.0, 1.5), (1.5, 2.0)]
    assert spread["from_finalize"] is True and spread["channel"]["alternatives"][0]["transcript"] == "a b"


def test_linear16_frames_wait_across_messages_and_channels_are_mixed():
    pcm = Linear16(48_000, 2)
    stereo = np.array([[100, 300], [-200, -400], [5, 7]] * 20_000, dtype="<i2").tobytes()
    pieces = pcm.pieces(stereo[:4001]) + pcm.pieces(stereo[4001:])
    mono = np.frombuffer(b"".join(pieces), dtype="<i2")
    assert len(mono) == 60_000 and list(mono[:3]) == [200, -300, 6]
    assert max(len(p) for p in pieces) <= 2 * 24_000  # half a second per piece
    assert pcm.duration_sec == 1.25
    assert pcm.pieces(b"\x01") == [] and pcm.pieces(b"\x02\x03\x04") != []


def test_utterance_end_watch_sends_after_a_gap_of_words_and_holds_for_speech_heard_within_it():
    from appliance.transport.websocket.utterance_end import LAG_SEC, UtteranceEndWatch

    watch = UtteranceEndWatch(1.0)
    watch.finalized(2.0)
    assert watch.words(2.5) is None and watch.audio(10.0) is None  # words within the gap: cancelled
    watch.finalized(4.0)
    assert watch.audio(4.0 + 1.0 + LAG_SEC - 0.01) is None and watch.audio(4.0 + 1.0 + LAG_SEC) == 4.0
    assert watch.audio(20.0) is None  # once per gap
    watch.finalized(21.0)
    assert watch.speech_started(21.4) is None and watch.audio(30.0) is None  # an onset within: held...
    watch.no_words()  # ...until its final says it had no words
    assert watch.audio(30.0) == 21.0
    watch.finalized(31.0)
    assert watch.words(32.5) == 31.0 and watch.closing(40.0) is None  # words after the gap: sent before them
    watch.finalized(41.0)
    assert watch.speech_started(42.2) == 41.0  # the VAD's onset after the gap
    watch.finalized(43.0)
    assert watch.closing(43.9) is None and watch.closing(44.0) == 43.0


@pytest.mark.parametrize("query, container, rate", [
    ("model=nova-3", True, 48_000), ("encoding=opus", True, 48_000), ("encoding=ogg-opus&sample_rate=48000", True,
                                                                       48_000),
    ("encoding=linear16&sample_rate=16000", False, 16_000)])
def test_containerized_audio_is_asked_for_as_deepgram_clients_do(query, container, rate):
    options = parse_options(query, LOADED)
    assert (options.container, options.sample_rate_hz) == (container, rate)
