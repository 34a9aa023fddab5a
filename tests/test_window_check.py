"""The check that sends short-window decodes back to the full window, on real tokens."""

from __future__ import annotations

import pytest

from appliance.models.backends.window_check import window_suspect
from appliance.models.store import resolve_model


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(resolve_model("tiny.en").path / "tokenizer.json"))


def _check(tokenizer, text: str, budget: int = 224) -> str | None:
    tokens = tokenizer.encode(text, add_special_tokens=False).ids
    return window_suspect(tokens, token_budget=budget,
                          is_word=lambda t: any(ch.isalnum() for ch in tokenizer.decode([t])))


@pytest.mark.parametrize("text", [" Side left.", " Go forward 10 meters.", " One, two, three.",
                                  " Author of the Danger Trail, Philip Stills, etc.", " Wait...  what?",
                                  " The rainbow is a division of white light into many beautiful colors. These take the"
                                  " shape of a long round arch, with its path high above, and its two ends apparently"
                                  " beyond the horizon. There is, according to legend, a boiling pot of gold at one"
                                  " end. People look, but no one ever finds it."])
def test_ordinary_results_pass(tokenizer, text):
    assert _check(tokenizer, text) is None


@pytest.mark.parametrize("text", [" Side left. Side left. Side left. Side", " 10 of clubs 10 of clubs 10",
                                  " 1. 2 3 3", " Side, right, right, right, right",
                                  " This is a very common type of bow, one showing mainly red and yellow with little or"
                                  " no green or blue. This is a very common type of bow, one showing mainly red and"
                                  " yellow with little or no green or blue."])
def test_loops_are_suspects(tokenizer, text):
    assert _check(tokenizer, text) == "repeated span"


def test_empty_and_budget_filling_results_are_suspects(tokenizer):
    assert _check(tokenizer, "") == "empty"
    assert _check(tokenizer, " a b c d e f g h", budget=8) == "token budget reached"
