"""The shard contract: the Arrow schema the tokenize stage writes and the reader that training
and evaluation load it with, in one module so writer and readers cannot drift apart.

A block is ``seq_len`` tokens holding one or more packed documents. ``position_ids`` restart at
0 where a document starts; transformers 5 turns such position ids into a block-diagonal causal
mask (``masking_utils.find_packed_sequence_indices``) for every model that builds its mask with
``create_causal_mask`` (GPT-2, StarCoder2, Phi among them) with the sdpa, eager and flash
kernels, provided no attention mask and no cache is passed. So packed documents do not attend
to each other. Labels are -100 on padding (positions >= ``length``) and on each document's
first token, which no earlier token of the same document can predict.

docs/data-contracts.md describes the columns.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.table import InMemoryTable

from repotune.atomic import atomic_path
from repotune.errors import InputError

SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("position_ids", pa.list_(pa.int32())),
        pa.field("length", pa.int32()),
        pa.field("weight", pa.float32()),
        pa.field("shas", pa.list_(pa.string())),
    ]
)
# The columns training and evaluation read (``shas`` is provenance for people).
COLUMNS = ("input_ids", "position_ids", "length", "weight")
IGNORE = -100


@dataclass
class ShardBlocks:
    """One split's blocks with their lengths and weights in memory (the token ids stay in the
    memory-mapped Arrow files)."""

    dataset: datasets.Dataset
    lengths: np.ndarray
    weights: np.ndarray
    seq_len: int

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens of the split."""
        return int(self.lengths.sum())

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``position_ids`` and ``labels`` (all int64, shape batch x seq_len)."""
        rows = self.dataset[indices]
        input_ids = torch.as_tensor(np.asarray(rows["input_ids"], dtype=np.int64))
        positions = torch.as_tensor(np.asarray(rows["position_ids"], dtype=np.int64))
        lengths = torch.as_tensor(self.lengths[indices], dtype=torch.int64)
        return collate(input_ids, positions, lengths)


def collate(
    input_ids: torch.Tensor, positions: torch.Tensor, lengths: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Model inputs for packed blocks.

    Padding gets positions 0, 1, 2, ... of its own, so it forms one separate "document" that no
    real token attends to, whatever position ids the shards stored for it.
    """
    seq_len = input_ids.shape[1]
    index = torch.arange(seq_len).expand_as(input_ids)
    padding = index >= lengths[:, None]
    pad_positions = (index - lengths[:, None]).clamp(min=0)
    positions = torch.where(padding, pad_positions, positions)
    labels = input_ids.clone()
    labels[padding | (positions == 0)] = IGNORE
    labels[:, 0] = IGNORE  # nothing precedes it, even when a block starts mid-document
    return {"input_ids": input_ids, "position_ids": positions, "labels": labels}


def load_blocks(split_dir: str | Path) -> ShardBlocks:
    """Load one split written by the tokenize stage; one-line error when it is not a shard."""
    try:
        dataset = datasets.load_from_disk(str(split_dir))
    except (FileNotFoundError, ValueError) as error:
        raise InputError(
            f"shards '{split_dir}'", f"cannot be loaded ({error})", "rerun the tokenize rule"
        ) from None
    missing = [column for column in COLUMNS if column not in dataset.column_names]
    if missing:
        raise InputError(
            f"shards '{split_dir}'",
            f"lack the columns {', '.join(missing)}",
            "rerun the tokenize rule (see docs/data-contracts.md)",
        )
    dataset = dataset.select_columns(list(COLUMNS))
    lengths = np.asarray(dataset["length"], dtype=np.int64)
    weights = np.asarray(dataset["weight"], dtype=np.float64)
    seq_len = len(dataset[0]["input_ids"]) if len(dataset) else 0
    return ShardBlocks(dataset=dataset, lengths=lengths, weights=weights, seq_len=seq_len)


def num_shards(blocks: int, seq_len: int, shard_tokens: int) -> int:
    """Shards for a split: about ``shard_tokens`` token slots each, at least one block each."""
    return max(1, min(blocks, math.ceil(blocks * seq_len / shard_tokens)))


def write_shards(table: pa.Table, directory: str | Path, shards: int) -> None:
    """Save ``table`` (of :data:`SHARD_SCHEMA`) with ``datasets.save_to_disk`` in ``shards``
    Arrow files, atomically; :func:`load_blocks` reads it back."""
    if table.schema != SHARD_SCHEMA:
        raise ValueError(f"shard table has schema {table.schema}, expected {SHARD_SCHEMA}")
    with atomic_path(directory) as temporary:
        datasets.Dataset(InMemoryTable(table)).save_to_disk(str(temporary), num_shards=shards)
