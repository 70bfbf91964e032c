"""The training stream's order: what an epoch is, with and without recency weighting."""

from collections import Counter

import numpy as np

from repotune.train.data import BlockOrder


def test_a_weighted_epoch_draws_each_block_as_often_as_its_share_says():
    # Recency weights from 0.5 (old) to 1.0 (new): a block's expected count in an epoch of
    # len(blocks) draws is between 0.67 and 1.33.
    weights = np.linspace(0.5, 1.0, 300)
    expected = len(weights) * weights / weights.sum()
    for epoch in range(3):
        counts = Counter(BlockOrder(weights, seed=7, weighted=True).epoch(epoch))
        assert sum(counts.values()) == len(weights)
        for block, share in enumerate(expected):
            # floor or ceil of the expected count: every block whose share is at least one
            # draw is seen, none is drawn three times (draws with replacement see ~60%).
            assert np.floor(share) <= counts[block] <= np.ceil(share), (epoch, block)


def test_the_weighted_order_is_shuffled_and_reproducible():
    weights = np.linspace(0.5, 1.0, 64)
    order = BlockOrder(weights, seed=3, weighted=True)
    first = order.epoch(0)
    assert first == BlockOrder(weights, seed=3, weighted=True).epoch(0)
    assert first != order.epoch(1)
    assert first != sorted(first)


def test_equal_weights_give_a_permutation_per_epoch():
    order = BlockOrder(np.ones(50), seed=1, weighted=True)
    assert sorted(order.epoch(0)) == list(range(50))
    assert order.step(0, 8) == order.epoch(0)[:8]
