"""Word timings of a final (appliance.streaming.word_timing): every word of the final's text gets a
timing in order, whether the text is exactly what the backend aligned or was changed after it."""

from __future__ import annotations

import itertools

from appliance.models.backends.base import WordTiming
from appliance.streaming.word_timing import align_words


def decoded(*spec: tuple[str, float, float]) -> list[WordTiming]:
    return [WordTiming(text, start, end, 0.9) for text, start, end in spec]


WORDS = decoded((" Go", 0.30, 0.52), (" forward", 0.52, 0.95), (" ten", 1.10, 1.31), (" meters.", 1.31, 1.80))


def check(words, text: str, low: float, high: float) -> None:
    assert [w.word for w in words] == text.split()
    assert all(low <= w.start_sec <= w.end_sec <= high and 0 <= w.probability <= 1 for w in words)
    assert all(a.start_sec <= b.start_sec for a, b in itertools.pairwise(words))


def test_the_decoded_words_land_in_the_session_timeline():
    words = align_words("Go forward ten meters.", WORDS, offset_sec=12.0, end_sec=14.0)
    check(words, "Go forward ten meters.", 12.0, 14.0)
    assert (words[2].start_sec, words[2].end_sec, words[2].probability) == (13.1, 13.31, 0.9)


def test_words_the_final_changed_are_timed_between_their_neighbours():
    # the commit policy kept "Go onward" from a partial; the last decode said "Go forward"
    words = align_words("Go onward ten meters.", WORDS, offset_sec=0.0, end_sec=2.0)
    check(words, "Go onward ten meters.", 0.0, 2.0)
    assert 0.52 <= words[1].start_sec <= words[1].end_sec <= 1.10 and words[1].probability == 0.9


def test_collapsed_repeats_and_a_stripped_overlap_keep_the_rest_aligned():
    looped = decoded((" the", 0.0, 0.1), (" the", 0.1, 0.2), (" the", 0.2, 0.3), (" end.", 0.3, 0.6))
    check(align_words("the the end.", looped, offset_sec=5.0, end_sec=6.0), "the the end.", 5.0, 6.0)
    check(align_words("ten meters.", WORDS, offset_sec=0.0, end_sec=2.0), "ten meters.", 0.0, 2.0)


def test_no_text_gives_no_words_and_times_stay_inside_the_audio():
    assert align_words("", WORDS, offset_sec=0.0, end_sec=2.0) == ()
    assert align_words("", [], offset_sec=0.0, end_sec=2.0) == ()
    late = decoded((" Go", 1.5, 2.6), (" forward", 2.6, 3.5))  # past the audio's end
    check(align_words("Go forward", late, offset_sec=0.0, end_sec=2.0), "Go forward", 0.0, 2.0)


def test_text_with_nothing_aligned_is_spread_over_its_audio_with_probability_0():
    # a final whose decode the quality filter dropped, its text all committed partial words
    words = align_words("Go forward ten", [], offset_sec=4.0, end_sec=5.5)
    check(words, "Go forward ten", 4.0, 5.5)
    assert [(w.start_sec, w.end_sec) for w in words] == [(4.0, 4.5), (4.5, 5.0), (5.0, 5.5)]
    assert all(w.probability == 0.0 for w in words)
