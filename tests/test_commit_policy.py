"""CommitPolicy (LocalAgreement-2), collapse_repeats and strip_overlap."""

from __future__ import annotations

import pytest

from appliance.streaming.commit import (
    CommitPolicy,
    collapse_repeats,
    committed_prefix_end,
    common_prefix_len,
    strip_overlap,
)


def words(text: str) -> list[str]:
    return text.split()


# --- CommitPolicy ---------------------------------------------------------------------------

def test_first_hypothesis_commits_nothing():
    policy = CommitPolicy()
    assert policy.partial("hello world") == ("", "hello world")
    assert policy.committed == []


def test_two_agreeing_hypotheses_commit_their_common_prefix():
    policy = CommitPolicy()
    policy.partial("the cat")
    assert policy.partial("the cat sat on") == ("the cat", "sat on")
    assert policy.partial("the cat sat on the mat") == ("the cat sat on", "the mat")
    assert policy.partial("the cat sat on the mat today") == ("the cat sat on the mat", "today")


def test_disagreement_stops_the_commit_at_the_first_differing_word():
    policy = CommitPolicy()
    policy.partial("I scream for ice")
    assert policy.partial("I scream you scream") == ("I scream", "you scream")


def test_agreement_ignores_case_and_punctuation_and_keeps_the_latest_spelling():
    policy = CommitPolicy()
    policy.partial("hello world how")
    committed, unstable = policy.partial("Hello, World! are you")
    assert committed == "Hello, World!"
    assert unstable == "are you"


def test_apostrophes_matter_for_agreement():
    assert common_prefix_len(words("don't go"), words("dont go")) == 0
    assert common_prefix_len(words("Don't, go"), words("don't go.")) == 2


def test_committed_text_never_shrinks_when_hypotheses_disagree_with_it():
    policy = CommitPolicy()
    policy.partial("send the report today")
    assert policy.partial("send the report tomorrow") == ("send the report", "tomorrow")
    # The model changes its mind about committed words: they stay; the first three words of the
    # hypothesis are taken to cover them, and the words after them are compared position by position.
    assert policy.partial("sent a rapport on monday") == ("send the report", "on monday")
    assert policy.partial("") == ("send the report", "")
    assert policy.partial("uh") == ("send the report", "")
    assert policy.partial("x y z on monday at nine") == ("send the report", "on monday at nine")
    assert policy.partial("a b c on Monday, at ten") == ("send the report on Monday, at", "ten")
    assert policy.partial("something else entirely") == ("send the report on Monday, at", "")


def test_final_keeps_committed_words_as_prefix():
    policy = CommitPolicy()
    policy.partial("we will meet at noon")
    policy.partial("we will meet at two")
    assert policy.committed == words("we will meet at")
    assert policy.final("we will meet at two thirty") == "we will meet at two thirty"
    # The final disagrees with the committed words: committed still wins, the tail is revised.
    assert policy.final("well we'll meat and two thirty") == "we will meet at two thirty"
    assert policy.final("we") == "we will meet at"
    assert policy.final("") == "we will meet at"


def test_final_without_partials_is_the_hypothesis():
    assert CommitPolicy().final("  just   the final ") == "just the final"


# --- property: committed only grows; text == committed + unstable ---------------------------

def check_sequence(sequence: list[str]) -> None:
    policy = CommitPolicy()
    previous_committed: list[str] = []
    previous_hypothesis: list[str] | None = None
    for hypothesis in sequence:
        committed_text, unstable_text = policy.partial(hypothesis)
        committed = list(policy.committed)
        assert committed_text == " ".join(committed)
        # committed only grows, and what was committed never changes
        assert committed[:len(previous_committed)] == previous_committed
        # text == committed + unstable: the unstable part is the hypothesis after the committed words
        hyp = words(hypothesis)
        assert words(unstable_text) == hyp[committed_prefix_end(committed, hyp):]
        assert " ".join(filter(None, (committed_text, unstable_text))) == policy.final(hypothesis)
        # newly committed words are this hypothesis's words after the old committed ones, and agree
        # with the previous hypothesis's words after them
        new = committed[len(previous_committed):]
        if new:
            assert previous_hypothesis is not None
            start = committed_prefix_end(previous_committed, hyp)
            assert new == hyp[start:start + len(new)]
            before = previous_hypothesis[committed_prefix_end(previous_committed, previous_hypothesis):]
            assert common_prefix_len(new, before) == len(new)
        assert words(policy.final(hypothesis))[:len(committed)] == committed
        previous_committed, previous_hypothesis = committed, hyp


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # hypothesis is a test-only extra; the example-based tests still run
    def test_property_tests_need_hypothesis():
        pytest.skip("hypothesis is not installed (pip install hypothesis)")
else:
    VOCAB = ["the", "The", "the,", "cat", "Cat.", "sat", "on", "mat", "mat!", "don't", "dont", "a"]
    PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, database=None)

    @st.composite
    def growing_hypotheses(draw):
        """Hypotheses that mostly extend or revise the previous one, as a streaming decoder's do."""
        current: list[str] = []
        out = []
        for _ in range(draw(st.integers(1, 12))):
            keep = draw(st.integers(0, len(current)))
            current = current[:keep] + draw(st.lists(st.sampled_from(VOCAB), max_size=4))
            out.append(" ".join(current))
        return out

    @PROPERTY_SETTINGS
    @given(st.lists(st.lists(st.sampled_from(VOCAB), max_size=8).map(" ".join), min_size=1, max_size=12))
    def test_property_random_hypotheses(sequence):
        check_sequence(sequence)

    @PROPERTY_SETTINGS
    @given(growing_hypotheses())
    def test_property_growing_hypotheses(sequence):
        check_sequence(sequence)


# --- collapse_repeats -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("the the the the", "the the"),
    ("go go go go go go go", "go go"),
    ("thank you. thank you. thank you. thank you.", "thank you. thank you."),
    ("Thank you. Thank you, thank you! THANK YOU.", "Thank you. Thank you,"),
    ("I I I I think so", "I I think so"),
    ("one two three four one two three four one two three four", "one two three four one two three four"),
    ("the cat sat sat sat sat on the mat", "the cat sat sat on the mat"),
])
def test_collapse_repeats_cuts_loops(text, expected):
    assert collapse_repeats(text) == expected


@pytest.mark.parametrize("text", [
    "very very good",
    "I think that that is right",
    "we had had enough",
    "bye bye, see you",
    "the quick brown fox jumps over the lazy dog",
    "one two one two",
    "",
])
def test_collapse_repeats_leaves_normal_text_alone(text):
    assert collapse_repeats(text) == " ".join(text.split())


def test_collapse_repeats_max_repeats():
    assert collapse_repeats("no no no", max_repeats=3) == "no no no"
    assert collapse_repeats("no no no no", max_repeats=3) == "no no no"
    assert collapse_repeats("no no no", max_repeats=1) == "no"


def test_collapse_repeats_ignores_punctuation_only_tokens():
    assert collapse_repeats("- - - - yes") == "- - - - yes"


# --- strip_overlap --------------------------------------------------------------------------

@pytest.mark.parametrize("previous, text, expected", [
    ("and then we went home", "went home and slept", "and slept"),
    ("and then we went home", "Went, home. and slept", "and slept"),  # case/punctuation-blind
    ("and then we went home", "home and slept", "and slept"),
    ("and then we went home", "and slept", "and slept"),  # no overlap
    ("we went home", "we went home", ""),  # all overlap
    ("", "hello there", "hello there"),
    ("hello there", "", ""),
    # up to max_words (8) of overlap is removed
    ("a b c d e f g h i j", "c d e f g h i j k", "k"),
])
def test_strip_overlap(previous, text, expected):
    assert strip_overlap(previous, text) == expected


def test_strip_overlap_prefers_the_longest_overlap():
    # "the" alone also overlaps, but "on the" is the longer match.
    assert strip_overlap("sat on the", "on the mat") == "mat"
    assert strip_overlap("the the", "the the cat") == "cat"


def test_strip_overlap_only_looks_back_max_words():
    previous = "a b c d e f g h i j"
    text = "b c d e f g h i j k"  # 9 words of overlap
    assert strip_overlap(previous, text) == text
    assert strip_overlap(previous, text, max_words=9) == "k"


@pytest.mark.parametrize("committed, final, expected", [
    ("the cat sat", "the cat has sat on the mat", "the cat sat on the mat"),  # a word inserted inside
    ("a b c d", "a b d e f", "a b c d e f"),  # a committed word left out
    ("turn the lights", "Turn the lights off", "turn the lights off"),  # the usual case
    ("send the report", "sent a rapport on monday", "send the report on monday"),  # nothing aligns
])
def test_the_final_continues_where_the_committed_words_align_in_it(committed, final, expected):
    policy = CommitPolicy()
    policy.partial(committed)
    policy.partial(committed)
    assert " ".join(policy.committed) == committed
    assert policy.final(final) == expected


def test_a_later_partial_that_drops_a_committed_word_does_not_lose_the_next_one():
    policy = CommitPolicy()
    policy.partial("please call the front desk")
    policy.partial("please call the front desk now")
    assert policy.partial("please call front desk now and") == ("please call the front desk now", "and")
