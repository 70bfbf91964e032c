"""Batched generation (repotune.inference.decoding): equal to one prompt at a time, stops at EOS
and stop strings; prompts cut to the budget (repotune.inference.budget) keep their end."""

from collections.abc import Sequence

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from repotune.inference.budget import Budget, fit
from repotune.inference.decoding import Generation, GenerationSettings, generate
from repotune.inference.prompts import Prompt, text_prompt
from repotune.inference.stops import find_stop
from repotune.modeling import build_model
from repotune.shards.tokenizer import TextEncoder
from testdata.training import train_tokenizer

PROMPTS = [
    "fix: handle empty items\n--- a/items.py\n+++ b/items.py\n",
    "feat: add",
    "docs: describe the cache\n+The cache option sets the size.\n+",
    "feat: add rows helper\n+def rows(value):\n",
    "x",
    "fix: handle empty config\n",
    "docs: describe tokens\n+The tokens option sets the size.\n",
    "feat: add users helper\n+def users(value):\n+    return value + 1\n",
    "fix: handle empty paths\n--- a/paths.py\n",
    "docs:",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def tiny_model(tokenizer: PreTrainedTokenizerFast, n_positions: int = 256) -> torch.nn.Module:
    torch.manual_seed(0)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    arch = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": n_positions}
    return build_model(arch, len(tokenizer), n_positions, special).eval()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    return tiny_model(tokenizer)


def settings(**overrides: object) -> GenerationSettings:
    return GenerationSettings(**{"max_new_tokens": 12, "batch_size": 8, **overrides})


def asked(
    tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], stops: Sequence[str] = ()
) -> list[Prompt]:
    """Text prompts, encoded as evaluation encodes a behavioural test's, uncut."""
    encoder = TextEncoder(tokenizer, ())
    return [text_prompt(text, encoder, stops, None) for text in texts]


def reference_generate(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, prompt: str, new: int
) -> list[int]:
    """transformers' own generate on one unpadded prompt: the baseline our batching must equal."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.slow
def test_batched_equals_one_at_a_time_and_transformers_generate(model, tokenizer):
    batched = generate(model, tokenizer, asked(tokenizer, PROMPTS), settings(batch_size=4))
    single = generate(model, tokenizer, asked(tokenizer, PROMPTS), settings(batch_size=1))
    assert batched == single
    assert any(g.finish == "length" and g.new_tokens == 12 for g in batched)
    for prompt, generation in zip(PROMPTS, batched, strict=True):
        # transformers stops at EOS too: the random model may end a prompt early.
        reference = reference_generate(model, tokenizer, prompt, 12)
        ended = reference[-1] == tokenizer.eos_token_id
        assert generation.finish == ("eos" if ended else "length")
        assert generation.new_tokens == len(reference)
        assert generation.text == tokenizer.decode(reference[:-1] if ended else reference)
        assert generation.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    # Results come back in the caller's order, whatever the length sorting did.
    reordered = generate(model, tokenizer, asked(tokenizer, PROMPTS[::-1]), settings(batch_size=3))
    assert reordered == batched[::-1]


def test_stops_at_eos(model, tokenizer, tmp_path):
    free = reference_generate(model, tokenizer, PROMPTS[0], 12)
    position = 5
    target = free[position]
    first = free.index(target)
    # A tokenizer whose EOS is the token the model writes at step `first`: generation must end
    # there, the EOS itself not in the text but counted as generated.
    tokenizer.save_pretrained(tmp_path)
    eos_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    eos_tokenizer.eos_token = tokenizer.convert_ids_to_tokens(target)
    assert eos_tokenizer.eos_token_id == target
    [result] = generate(model, eos_tokenizer, asked(eos_tokenizer, PROMPTS[:1]), settings())
    assert result == Generation(
        text=tokenizer.decode(free[:first]),
        new_tokens=first + 1,
        prompt_tokens=len(tokenizer(PROMPTS[0])["input_ids"]),
        truncated=False,
        finish="eos",
    )


def test_stops_at_a_stop_string_per_prompt_and_shared(model, tokenizer):
    free = generate(model, tokenizer, asked(tokenizer, PROMPTS[:3]), settings())
    # A stop string taken from the middle of what the model writes for the first prompt.
    text = free[0].text
    marker = text[len(text) // 2 : len(text) // 2 + 3]
    assert marker and marker in text
    cut = text.index(marker)
    prompts = asked(tokenizer, PROMPTS[:1], [marker]) + asked(tokenizer, PROMPTS[1:3])
    stopped = generate(model, tokenizer, prompts, settings())
    assert stopped[0].text == text[:cut] and stopped[0].finish == "stop"
    assert stopped[0].new_tokens < free[0].new_tokens
    assert stopped[1:] == free[1:]
    assert stopped[0].prompt_tokens == free[0].prompt_tokens


def test_long_prompts_keep_their_end_and_fit_the_context(tokenizer):
    short = tiny_model(tokenizer, n_positions=32)
    long_prompt = "feat: add rows helper\n" * 20
    # 20 new tokens would leave 12 of 32 for the prompt: the generation gets half the context.
    limits = fit(1024, 20, 32)
    assert limits == Budget(prompt_tokens=16, new_tokens=16)
    [prompt] = [text_prompt(long_prompt, TextEncoder(tokenizer, ()), (), limits.prompt_tokens)]
    [result] = generate(short, tokenizer, [prompt], settings(max_new_tokens=limits.new_tokens))
    assert result.truncated and result.prompt_tokens == 16 and result.new_tokens == 16
    tail = tokenizer(long_prompt, add_special_tokens=False)["input_ids"][-16:]
    assert list(prompt.ids) == tail
    assert result.text == tokenizer.decode(
        reference_generate(short, tokenizer, tokenizer.decode(tail), 16)
    )
    # A prompt not cut to the budget is the caller's bug: refused, not silently cut.
    [uncut] = asked(tokenizer, [long_prompt])
    with pytest.raises(ValueError, match="exceed the model's context"):
        generate(short, tokenizer, [uncut], settings(max_new_tokens=limits.new_tokens))


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(model, tokenizer):
    sampled = settings(do_sample=True, temperature=1.5, seed=7)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    prompts = asked(tokenizer, PROMPTS[:4])
    first = generate(model, tokenizer, prompts, sampled)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate(model, tokenizer, prompts, sampled) == first
    other = generate(model, tokenizer, prompts, settings(do_sample=True, temperature=1.5, seed=8))
    assert other != first
    assert first != generate(model, tokenizer, prompts, settings())


@pytest.mark.parametrize(
    ("text", "stops", "prefix", "expected"),
    [
        ("abc<|diff|>def", ["<|diff|>"], "", 3),
        ("abc", ["<|diff|>"], "", None),
        ("a\n-b\n c", ["\n ", "\n-"], "", 1),
        (" context", ["\n "], "+x\n", 0),  # the stop begins in the prompt: nothing is kept
        ("+y\n z", ["\n "], "\n \n", 2),  # a stop wholly inside the prompt does not count
        ("", ["\n "], "abc\n", None),
    ],
)
def test_find_stop(text, stops, prefix, expected):
    assert find_stop(text, stops, prefix) == expected


def test_empty_prompt_list(model, tokenizer):
    assert generate(model, tokenizer, [], settings()) == []


def test_prompts_are_given_as_token_ids_and_used_as_given(model, tokenizer):
    """Evaluation passes the training shards' ids (repotune.shards.prompt), not text."""
    ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in PROMPTS[:3]]
    assert [list(p.ids) for p in asked(tokenizer, PROMPTS[:3])] == ids
    other = Prompt((*ids[0][:-1], (ids[0][-1] + 1) % len(tokenizer)), ())
    [result] = generate(model, tokenizer, [other], settings())
    assert result.prompt_tokens == len(other.ids)


def first_stop_step(
    tokenizer: PreTrainedTokenizerFast, new_ids: list[int], stop: str, prefix: str
) -> int:
    """How many tokens the model must write before ``stop`` shows: decoding prefix by prefix."""
    for count in range(1, len(new_ids) + 1):
        if find_stop(tokenizer.decode(new_ids[:count]), [stop], prefix) is not None:
            return count
    raise AssertionError(f"{stop!r} never completes")


def test_a_stop_string_spanning_a_token_boundary_stops_at_the_token_completing_it(model, tokenizer):
    free = reference_generate(model, tokenizer, PROMPTS[3], 12)
    pieces = [tokenizer.decode([token]) for token in free]
    # The end of one token and the start of the next: no single token holds the stop string.
    k = next(i for i in range(2, len(pieces) - 1) if pieces[i].strip() and pieces[i + 1].strip())
    stop = pieces[k][-2:] + pieces[k + 1][:2]
    assert not any(stop in piece for piece in pieces)
    text = tokenizer.decode(free)
    prefix = PROMPTS[3][-len(stop) :]
    [result] = generate(model, tokenizer, asked(tokenizer, PROMPTS[3:4], [stop]), settings())
    assert result.finish == "stop"
    assert result.text == text[: text.index(stop)]
    assert result.new_tokens == first_stop_step(tokenizer, free, stop, prefix) <= k + 2


def test_a_stop_string_beginning_in_the_prompt_cuts_at_once(model, tokenizer):
    free = reference_generate(model, tokenizer, PROMPTS[0], 12)
    first = tokenizer.decode(free[:1])
    # The prompt's last character and the model's first: the stop is complete after one token.
    stop = PROMPTS[0][-1] + first[:1]
    prompts = asked(tokenizer, PROMPTS[:1], [stop]) + asked(tokenizer, PROMPTS[1:3])
    batched = generate(model, tokenizer, prompts, settings())
    assert batched[0] == Generation(
        text="",
        new_tokens=1,
        prompt_tokens=len(tokenizer(PROMPTS[0])["input_ids"]),
        truncated=False,
        finish="stop",
    )
    assert batched[1:] == generate(model, tokenizer, asked(tokenizer, PROMPTS[1:3]), settings())
