"""Decoding for `suggest` and `complete` (repotune.inference.decoding.continuations): stops once
every sequence holds a stop string, and returns the same texts as decoding the whole budget and
cutting afterwards."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from transformers import PreTrainedTokenizerFast, StoppingCriteriaList

from repotune.inference import decoding as decoding_module
from repotune.inference.decoding import Decoding, continuations
from repotune.inference.prompts import Prompt
from testdata.training import train_tokenizer
from tests.test_generation import reference_generate, tiny_model

PROMPT = "feat: add rows helper\n+def rows(value):\n"
BUDGET = 64


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    return tiny_model(tokenizer)


@pytest.fixture
def ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    return tokenizer(PROMPT, add_special_tokens=False)["input_ids"]


@contextmanager
def counting_steps(model: torch.nn.Module) -> Iterator[list[int]]:
    """Counts the model's forward passes: one per generated token."""
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def decode_counting(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, ids: list[int], stops: list[str],
    decoding: Decoding,
) -> tuple[list[str], int]:  # fmt: skip
    with counting_steps(model) as calls:
        texts = continuations(model, tokenizer, Prompt(tuple(ids), tuple(stops)), decoding)
    return texts, len(calls)


def test_greedy_stops_at_the_token_completing_a_stop_string_with_the_same_text(
    model, tokenizer, ids
):
    free = reference_generate(model, tokenizer, PROMPT, BUDGET)
    assert len(free) == BUDGET and tokenizer.eos_token_id not in free
    pieces = [tokenizer.decode([token]) for token in free]
    # The end of one token and the start of the next: no single token holds the stop string.
    k = next(i for i in range(2, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    assert not any(stop in piece for piece in pieces)
    text = tokenizer.decode(free)
    completing = next(
        count for count in range(1, BUDGET + 1) if stop in tokenizer.decode(free[:count])
    )
    texts, steps = decode_counting(model, tokenizer, ids, [stop], Decoding(max_new_tokens=BUDGET))
    assert texts == [text[: text.index(stop)]]
    assert steps == completing <= k + 2 < BUDGET


def test_stopping_early_keeps_the_texts_of_the_whole_budget(model, tokenizer, ids, monkeypatch):
    """Greedy and seeded samples: the same texts as decoding all ``max_new_tokens`` and cutting.

    Each candidate's stop string is taken from its own uncut text, so every sequence of both
    ``generate`` calls (greedy, then the samples) meets one well before the budget ends.
    """
    decoding = Decoding(candidates=4, max_new_tokens=BUDGET, seed=3)
    with monkeypatch.context() as patch:  # no stop criterion: the whole budget, then the cut
        patch.setattr(decoding_module, "StoppingCriteriaList", lambda _: StoppingCriteriaList())
        uncut, _ = decode_counting(model, tokenizer, ids, [], decoding)
        stops = [text[len(text) // 3 :][:3] for text in uncut]
        assert len(uncut) == 4 and all(len(stop) == 3 for stop in stops)
        whole, whole_steps = decode_counting(model, tokenizer, ids, stops, decoding)
    texts, steps = decode_counting(model, tokenizer, ids, stops, decoding)
    assert texts == whole
    assert all(len(text) < len(full) for text, full in zip(texts, uncut, strict=True))
    assert whole_steps == 2 * BUDGET
    assert steps < BUDGET


def test_no_stop_string_decodes_the_whole_budget(model, tokenizer, ids):
    texts, steps = decode_counting(model, tokenizer, ids, [], Decoding(max_new_tokens=BUDGET))
    assert texts == [tokenizer.decode(reference_generate(model, tokenizer, PROMPT, BUDGET))]
    assert steps == BUDGET
