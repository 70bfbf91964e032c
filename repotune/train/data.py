"""The training stream over the tokenize stage's blocks (read with
:func:`repotune.shards.table.load_blocks`).

Data order is a pure function of (seed, epoch): training step ``k`` always sees the same
blocks, which is what makes a resumed run equal to an uninterrupted one. With the curriculum
on, blocks are drawn with replacement in proportion to their recency ``weight``; with every
weight equal, each epoch is a permutation.
"""

import numpy as np
import torch


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
            if self.weighted:
                order = torch.multinomial(self.weights, self.size, True, generator=generator)
            else:
                order = torch.randperm(self.size, generator=generator)
            self._epochs = {epoch: order.tolist()}
        return self._epochs[epoch]

    def step(self, step: int, effective_batch: int) -> list[int]:
        """The blocks of training step ``step``."""
        start = step * effective_batch
        return [
            self.epoch(item // self.size)[item % self.size]
            for item in range(start, start + effective_batch)
        ]
