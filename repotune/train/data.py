"""Training blocks from the tokenize stage's shards, batched and ordered for training.

A block is ``seq_len`` tokens holding one or more packed documents. ``position_ids`` restart at
0 where a document starts; transformers 5 turns such position ids into a block-diagonal causal
mask (``masking_utils.find_packed_sequence_indices``) for every model that builds its mask with
``create_causal_mask`` (GPT-2, StarCoder2, Phi among them) with the sdpa, eager and flash
kernels, provided no attention mask and no cache is passed. So packed documents do not attend
to each other. Labels are -100 on padding (positions >= ``length``) and on each document's
first token, which no earlier token of the same document can predict.

Data order is a pure function of (seed, epoch): training step ``k`` always sees the same
blocks, which is what makes a resumed run equal to an uninterrupted one. An epoch is always
``len(blocks)`` blocks. With every weight equal (or the curriculum off) it is a permutation.
With the curriculum on, block ``i`` appears ``floor`` or ``ceil`` of ``len(blocks) * w_i /
sum(w)`` times (systematic sampling), in shuffled order: newer blocks are seen more often, an
old block less often or, when its share is under one draw, in some epochs only. Independent
draws with replacement would instead leave ~40% of the blocks out of each epoch by chance.
"""

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from repotune.errors import InputError

COLUMNS = ("input_ids", "position_ids", "length", "weight")
IGNORE = -100


@dataclass
class Blocks:
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


def load_blocks(split_dir: str | Path) -> Blocks:
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
    return Blocks(dataset=dataset, lengths=lengths, weights=weights, seq_len=seq_len)


class BlockOrder:
    """The training stream: epoch after epoch of block indices, reproducible from the seed.

    Step ``k`` of an effective batch of ``E`` blocks takes stream items ``k*E .. (k+1)*E - 1``;
    an epoch is ``len(blocks)`` items.
    """

    def __init__(self, weights: np.ndarray, seed: int, weighted: bool) -> None:
        self.size = len(weights)
        self.seed = seed
        self.weighted = weighted and bool(np.ptp(weights) > 0)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self._epochs: dict[int, list[int]] = {}

    def epoch(self, epoch: int) -> list[int]:
        """The block indices of one epoch."""
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)
            if self.weighted:
                order = self._systematic(generator)[order]
            self._epochs = {epoch: order.tolist()}
        return self._epochs[epoch]

    def _systematic(self, generator: torch.Generator) -> torch.Tensor:
        """``size`` block indices, block ``i`` repeated floor or ceil of its expected count:
        one random offset, then evenly spaced points on the cumulative weights."""
        cumulative = torch.cumsum(self.weights / self.weights.sum(), 0) * self.size
        offset = torch.rand(1, generator=generator, dtype=torch.float64)
        points = offset + torch.arange(self.size, dtype=torch.float64)
        picks = torch.searchsorted(cumulative, points, right=True)
        return picks.clamp(max=self.size - 1)

    def step(self, step: int, effective_batch: int) -> list[int]:
        """The blocks of training step ``step``."""
        start = step * effective_batch
        return [
            self.epoch(item // self.size)[item % self.size]
            for item in range(start, start + effective_batch)
        ]
