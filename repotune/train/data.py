"""The training stream over the tokenize stage's blocks (read with
:func:`repotune.shards.torch_blocks.load_blocks`).

Data order is a pure function of (seed, epoch): training step ``k`` always sees the same
blocks, which is what makes a resumed run equal to an uninterrupted one. An epoch is always
``len(blocks)`` blocks. With every weight equal (or the curriculum off) it is a permutation.
With the curriculum on, block ``i`` appears ``floor`` or ``ceil`` of ``len(blocks) * w_i /
sum(w)`` times (systematic sampling), in shuffled order: newer blocks are seen more often, an
old block less often or, when its share is under one draw, in some epochs only. Independent
draws with replacement would instead leave ~40% of the blocks out of each epoch by chance.
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
