"""Inputs of the train stage, made here: a byte-level BPE tokenizer trained on fixture text
and packed shards in the tokenize stage's contract (docs/data-contracts.md).

The documents are learnable: a few templates of commit-like text with varying names, so a
model's loss falls quickly when training works and stays put when it does not.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
TEMPLATES = (
    "fix: handle empty {name}\n--- a/{name}.py\n+++ b/{name}.py\n"
    "+    if not {name}:\n+        return None\n",
    "feat: add {name} helper\n+def {name}(value):\n+    return value + 1\n",
    "docs: describe {name}\n+The {name} option sets the size.\n",
)
NAMES = (
    "items",
    "rows",
    "paths",
    "config",
    "cache",
    "tokens",
    "commits",
    "blocks",
    "users",
    "files",
)


@dataclass(frozen=True)
class TrainInputs:
    """Paths of one fixture model's inputs under ``results/{model}/``."""

    root: Path
    shards: Path
    tokenizer: Path


def documents(count: int, seed: int) -> list[str]:
    """Commit-like texts from the templates."""
    rng = random.Random(seed)
    return [rng.choice(TEMPLATES).format(name=rng.choice(NAMES)) for _ in range(count)]


def train_tokenizer(directory: Path, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on fixture documents, saved with save_pretrained."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(documents(200, seed=0), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    wrapped.save_pretrained(directory)
    return wrapped


def pack(
    texts: list[str],
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    weights: list[float],
    commits: list[int] | None = None,
) -> dict[str, list]:
    """Pack documents (each ending in EOS) greedily into blocks of ``seq_len`` tokens;
    ``commits[i]`` numbers document ``i``'s commit (default: each its own)."""
    columns: dict[str, list] = {
        key: []
        for key in ("input_ids", "position_ids", "length", "weight", "shas", "document_shas")
    }
    ids: list[int] = []
    positions: list[int] = []
    shas: list[str] = []
    block_weight: list[float] = []

    def flush() -> None:
        if not ids:
            return
        length = len(ids)
        columns["input_ids"].append(ids + [tokenizer.pad_token_id] * (seq_len - length))
        columns["position_ids"].append(positions + [0] * (seq_len - length))
        columns["length"].append(length)
        columns["weight"].append(float(np.mean(block_weight)))
        columns["shas"].append(list(dict.fromkeys(shas)))
        columns["document_shas"].append(list(shas))
        ids.clear(), positions.clear(), shas.clear(), block_weight.clear()

    for number, (text, weight) in enumerate(zip(texts, weights, strict=True)):
        tokens = [*tokenizer(text)["input_ids"][: seq_len - 1], tokenizer.eos_token_id]
        if len(ids) + len(tokens) > seq_len:
            flush()
        ids.extend(tokens)
        positions.extend(range(len(tokens)))
        shas.append(f"{number if commits is None else commits[number]:040x}")
        block_weight.append(weight)
    flush()
    return columns


FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "position_ids": datasets.List(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "weight": datasets.Value("float32"),
        "shas": datasets.List(datasets.Value("string")),
        "document_shas": datasets.List(datasets.Value("string")),
    }
)


def write_inputs(
    results: Path,
    model: str = "tiny",
    seq_len: int = 64,
    train_docs: int = 96,
    validation_docs: int = 24,
    recency: bool = True,
) -> TrainInputs:
    """Write ``results/{model}/tokenizer/`` and ``results/{model}/shards/`` like tokenize does."""
    root = results / model
    tokenizer = train_tokenizer(root / "tokenizer")
    shards = root / "shards"
    stats: dict[str, int] = {
        "seq_len": seq_len,
        "eos_id": tokenizer.eos_token_id,
        "pad_id": tokenizer.pad_token_id,
    }
    for split, count, seed in (("train", train_docs, 1), ("validation", validation_docs, 2)):
        texts = documents(count, seed)
        weights = [0.5 ** ((count - i) / count) if recency else 1.0 for i in range(count)]
        columns = pack(texts, tokenizer, seq_len, weights)
        datasets.Dataset.from_dict(columns, features=FEATURES).save_to_disk(str(shards / split))
        stats[f"{split}_tokens"] = int(sum(columns["length"]))
        stats[f"{split}_blocks"] = len(columns["length"])
    (shards / "stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return TrainInputs(root=root, shards=shards, tokenizer=root / "tokenizer")
