"""Perplexity on packed blocks against a hand computation, document by document, from logits."""

import math
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from repotune.evaluate.perplexity import block_scores, from_sums, perplexity
from repotune.evaluate.stage import variant
from repotune.modeling import build_model
from repotune.shards.torch_blocks import load_blocks
from testdata.training import FEATURES, documents, pack, train_tokenizer

# Long enough for several fixture documents (15-35 tokens each) to share a block.
SEQ_LEN = 96


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("ppl")
    tokenizer = train_tokenizer(root / "tokenizer")
    texts = documents(20, seed=5)
    columns = pack(texts, tokenizer, SEQ_LEN, [1.0] * len(texts))
    datasets.Dataset.from_dict(columns, features=FEATURES).save_to_disk(str(root / "test"))
    return root / "test", tokenizer


def tiny_model(tokenizer: object) -> torch.nn.Module:
    torch.manual_seed(1)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    arch = {"n_layer": 2, "n_head": 2, "n_embd": 32}
    return build_model(arch, len(tokenizer), SEQ_LEN, special).eval()


@pytest.fixture(scope="module")
def model(shards) -> torch.nn.Module:
    return tiny_model(shards[1])


def by_hand(model: torch.nn.Module, split: Path) -> tuple[float, int]:
    """Each packed document run through the model on its own, unpadded, from position 0: the
    summed -log p of every token after the document's first, and how many there are."""
    rows = datasets.load_from_disk(str(split))
    nll, count = 0.0, 0
    for row in rows:
        ids = row["input_ids"][: row["length"]]
        starts = [i for i, p in enumerate(row["position_ids"][: row["length"]]) if p == 0]
        for start, end in zip(starts, [*starts[1:], len(ids)], strict=True):
            document = torch.tensor([ids[start:end]])
            with torch.no_grad():
                logits = model(input_ids=document).logits[0]
            log_probs = torch.log_softmax(logits.double(), dim=-1)
            for position in range(1, document.shape[1]):
                nll -= float(log_probs[position - 1, document[0, position]])
                count += 1
    return nll, count


def test_matches_a_hand_computation_from_logits(shards, model):
    split, _ = shards
    blocks = load_blocks(split)
    assert len(blocks) >= 3 and (blocks.lengths < SEQ_LEN).any()
    # Several documents share most blocks (document starts counted among the real tokens only,
    # not in the padding): the block-diagonal mask must keep them apart.
    rows = datasets.load_from_disk(str(split))
    starts = [sum(p == 0 for p in row["position_ids"][: row["length"]]) for row in rows]
    assert sum(count >= 2 for count in starts) >= 3
    nll, count = by_hand(model, split)
    result = perplexity(model, blocks, batch_size=2)
    assert (
        result.tokens
        == count
        == int(blocks.lengths.sum())
        - sum(
            1
            for row in datasets.load_from_disk(str(split))
            for p in row["position_ids"][: row["length"]]
            if p == 0
        )
    )
    assert result.loss == pytest.approx(nll / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result.bits_per_token == pytest.approx(nll / count / math.log(2), rel=1e-5)
    assert result.blocks == len(blocks)


def test_batch_size_does_not_change_it_and_max_blocks_limits_it(shards, model):
    split, _ = shards
    blocks = load_blocks(split)
    one = perplexity(model, blocks, batch_size=1)
    assert perplexity(model, blocks, batch_size=3).loss == pytest.approx(one.loss, rel=1e-6)
    first = perplexity(model, blocks, batch_size=2, max_blocks=1)
    assert first.blocks == 1 and 0 < first.tokens < one.tokens


def test_adapter_switched_off_is_the_base_model(shards, model):
    split, tokenizer = shards
    blocks = load_blocks(split)
    base = perplexity(model, blocks)
    # A fresh copy of the same base (same seed); init_lora_weights=False makes B random too, so
    # the adapter really changes the outputs.
    adapted_model = get_peft_model(
        tiny_model(tokenizer),
        LoraConfig(
            r=4,
            lora_alpha=64,
            target_modules=["c_attn", "c_fc"],
            fan_in_fan_out=True,
            init_lora_weights=False,
        ),
    )
    with variant(adapted_model, "base"):
        switched_off = perplexity(adapted_model, blocks)
    with variant(adapted_model, "adapted"):
        adapted = perplexity(adapted_model, blocks)
    assert switched_off.loss == pytest.approx(base.loss, rel=1e-6)
    assert abs(adapted.loss - base.loss) > 1e-3


def test_no_tokens_gives_none_not_nan():
    empty = from_sums(0.0, 0, 0)
    assert (empty.loss, empty.perplexity, empty.bits_per_token, empty.tokens) == (
        None,
        None,
        None,
        0,
    )
    assert from_sums(math.log(2) * 10, 10, 1).bits_per_token == pytest.approx(1.0)


def test_from_sums_by_hand_and_as_json():
    # 4 tokens at ln 2 nats each: perplexity 2, one bit per token.
    result = from_sums(4 * math.log(2), 4, 2)
    assert result.as_dict() == pytest.approx(
        {"loss": math.log(2), "perplexity": 2.0, "bits_per_token": 1.0, "tokens": 4, "blocks": 2}
    )
    assert from_sums(0.0, 0, 3).as_dict() == {
        "loss": None,
        "perplexity": None,
        "bits_per_token": None,
        "tokens": 0,
        "blocks": 3,
    }


def test_block_scores_cover_every_block_by_default(shards, model):
    blocks = load_blocks(shards[0])
    scores = block_scores(model, blocks)
    assert len(scores.nll) == len(scores.tokens) == len(blocks)
    assert scores.summary() == perplexity(model, blocks)


def test_progress_counts_blocks_on_stderr(shards, model, capsys):
    blocks = load_blocks(shards[0])
    block_scores(model, blocks, max_blocks=2)
    progress = capsys.readouterr().err.splitlines()[-1].split("\r")[-1]
    assert progress.startswith("perplexity: 100%") and "2/2" in progress
    assert "block/s" in progress or "s/block" in progress
