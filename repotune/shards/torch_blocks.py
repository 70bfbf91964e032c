"""The shard reader of training and evaluation: one split's blocks, and packed blocks turned
into model inputs (torch tensors).

Apart from :mod:`repotune.shards.table` (the schema and the writer) because only train and
evaluate use torch: the tokenize stage imports the table module, and its env
(envs/data.yaml) holds no pytorch. The block layout (``position_ids`` restarting at 0 per
document, labels -100 on padding and on each document's first token) is described in
:mod:`repotune.shards.table` and docs/data-contracts.md.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from repotune.errors import InputError
from repotune.shards.table import COLUMNS, IGNORE


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


def open_split(split_dir: str | Path, columns: Sequence[str]) -> datasets.Dataset:
    """One split written by the tokenize stage, ``columns`` only; one-line error when it is not
    a shard or lacks one of them (written by an older tokenize stage)."""
    try:
        dataset = datasets.load_from_disk(str(split_dir))
    except (FileNotFoundError, ValueError) as error:
        raise InputError(
            f"shards '{split_dir}'", f"cannot be loaded ({error})", "rerun the tokenize rule"
        ) from None
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise InputError(
            f"shards '{split_dir}'",
            f"lack the column(s) {', '.join(missing)}",
            "rerun the tokenize rule (see docs/data-contracts.md)",
        )
    return dataset.select_columns(list(columns))


def load_blocks(split_dir: str | Path) -> ShardBlocks:
    """Load one split written by the tokenize stage; one-line error when it is not a shard."""
    dataset = open_split(split_dir, COLUMNS)
    lengths = np.asarray(dataset["length"], dtype=np.int64)
    weights = np.asarray(dataset["weight"], dtype=np.float64)
    seq_len = len(dataset[0]["input_ids"]) if len(dataset) else 0
    return ShardBlocks(dataset=dataset, lengths=lengths, weights=weights, seq_len=seq_len)
