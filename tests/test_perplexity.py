"""Perplexity on packed blocks against a hand computation, document by document, from logits,
summed per commit through the shards' document_shas."""

import math
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from repotune.errors import InputError
from repotune.evaluate.perplexity import block_scores, document_commits, from_sums, perplexity
from repotune.evaluate.stage import variant
from repotune.modeling import build_model
from repotune.shards.torch_blocks import load_blocks
from testdata.training import FEATURES, documents, pack, train_tokenizer

# Long enough for several fixture documents (15-35 tokens each) to share a block.
SEQ_LEN = 96
# Three documents per commit: commits span blocks and blocks mix commits.
COMMIT_OF = [index // 3 for index in range(20)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("ppl")
    tokenizer = train_tokenizer(root / "tokenizer")
    texts = documents(20, seed=5)
    columns = pack(texts, tokenizer, SEQ_LEN, [1.0] * len(texts), COMMIT_OF)
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


def by_hand(model: torch.nn.Module, split: Path) -> dict[str, tuple[float, int]]:
    """Each packed document run through the model on its own, unpadded, from position 0: per
    commit (the document's entry in ``document_shas``), the summed -log p of every token after
    each document's first, and how many there are."""
    rows = datasets.load_from_disk(str(split))
    sums: dict[str, tuple[float, int]] = {}
    for row in rows:
        ids = row["input_ids"][: row["length"]]
        starts = [i for i, p in enumerate(row["position_ids"][: row["length"]]) if p == 0]
        spans = zip(starts, [*starts[1:], len(ids)], strict=True)
        for sha, (start, end) in zip(row["document_shas"], spans, strict=True):
            document = torch.tensor([ids[start:end]])
            with torch.no_grad():
                logits = model(input_ids=document).logits[0]
            log_probs = torch.log_softmax(logits.double(), dim=-1)
            nll, count = sums.get(sha, (0.0, 0))
            for position in range(1, document.shape[1]):
                nll -= float(log_probs[position - 1, document[0, position]])
                count += 1
            sums[sha] = (nll, count)
    return sums


def test_matches_a_hand_computation_from_logits_commit_by_commit(shards, model):
    split, _ = shards
    blocks = load_blocks(split)
    documents = document_commits(split)
    assert len(blocks) >= 3 and (blocks.lengths < SEQ_LEN).any()
    # Several documents share most blocks (document starts counted among the real tokens only,
    # not in the padding): the block-diagonal mask must keep them apart. Commits span blocks
    # and blocks mix commits: per-commit sums must follow each token's document.
    rows = datasets.load_from_disk(str(split))
    starts = [sum(p == 0 for p in row["position_ids"][: row["length"]]) for row in rows]
    assert sum(count >= 2 for count in starts) >= 3
    assert starts == [len(shas) for shas in documents]
    every = {sha for shas in documents for sha in shas}
    blocks_of = {sha: {b for b, shas in enumerate(documents) if sha in shas} for sha in every}
    assert any(len(spanned) >= 2 for spanned in blocks_of.values())
    assert any(len(set(shas)) >= 2 for shas in documents)
    hand = by_hand(model, split)
    scores = block_scores(model, blocks, documents, batch_size=2)
    assert scores.shas == list(hand) and len(scores.shas) == len(set(COMMIT_OF))
    assert scores.nll == pytest.approx([nll for nll, _ in hand.values()], rel=1e-5)
    assert scores.tokens == [count for _, count in hand.values()]
    nll, count = (sum(values) for values in zip(*hand.values(), strict=True))
    result = scores.summary()
    assert result.tokens == count == int(blocks.lengths.sum()) - sum(starts)
    assert result.loss == pytest.approx(nll / count, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert result.bits_per_token == pytest.approx(nll / count / math.log(2), rel=1e-5)
    assert (result.blocks, result.commits) == (len(blocks), len(set(COMMIT_OF)))


def test_batch_size_does_not_change_it_and_max_blocks_limits_it(shards, model):
    split, _ = shards
    blocks, documents = load_blocks(split), document_commits(split)
    one = perplexity(model, blocks, documents, batch_size=1)
    assert perplexity(model, blocks, documents, batch_size=3).loss == pytest.approx(
        one.loss, rel=1e-6
    )
    first = perplexity(model, blocks, documents, batch_size=2, max_blocks=1)
    assert first.blocks == 1 and 0 < first.tokens < one.tokens
    assert first.commits == len(set(documents[0]))


def test_adapter_switched_off_is_the_base_model(shards, model):
    split, tokenizer = shards
    blocks, documents = load_blocks(split), document_commits(split)
    base = perplexity(model, blocks, documents)
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
        switched_off = perplexity(adapted_model, blocks, documents)
    with variant(adapted_model, "adapted"):
        adapted = perplexity(adapted_model, blocks, documents)
    assert switched_off.loss == pytest.approx(base.loss, rel=1e-6)
    assert abs(adapted.loss - base.loss) > 1e-3


def test_document_shas_that_do_not_match_the_blocks_are_refused(shards, model, tmp_path):
    split, _ = shards
    blocks, documents = load_blocks(split), document_commits(split)
    short = [shas[:-1] for shas in documents]
    with pytest.raises(InputError, match=r"test block 0.*documents but its document_shas name"):
        block_scores(model, blocks, short)
    old = datasets.load_from_disk(str(split)).remove_columns(["document_shas"])
    old.save_to_disk(str(tmp_path / "old"))
    with pytest.raises(InputError, match=r"lack the column\(s\) document_shas.*rerun the tokenize"):
        document_commits(tmp_path / "old")


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
    result = from_sums(4 * math.log(2), 4, 2, 1)
    assert result.as_dict() == pytest.approx(
        {
            "loss": math.log(2),
            "perplexity": 2.0,
            "bits_per_token": 1.0,
            "tokens": 4,
            "blocks": 2,
            "commits": 1,
        }
    )
    assert from_sums(0.0, 0, 3).as_dict() == {
        "loss": None,
        "perplexity": None,
        "bits_per_token": None,
        "tokens": 0,
        "blocks": 3,
        "commits": 0,
    }


def test_block_scores_cover_every_block_by_default(shards, model):
    blocks, documents = load_blocks(shards[0]), document_commits(shards[0])
    scores = block_scores(model, blocks, documents)
    assert len(scores.nll) == len(scores.tokens) == len(set(COMMIT_OF))
    assert scores.blocks == len(blocks)
    assert scores.summary() == perplexity(model, blocks, documents)


def test_progress_counts_blocks_on_stderr(shards, model, capsys):
    blocks = load_blocks(shards[0])
    block_scores(model, blocks, document_commits(shards[0]), max_blocks=2)
    progress = capsys.readouterr().err.splitlines()[-1].split("\r")[-1]
    assert progress.startswith("perplexity: 100%") and "2/2" in progress
    assert "block/s" in progress or "s/block" in progress
