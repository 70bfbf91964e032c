"""The paired bootstrap: seeded, paired, token-weighted, and honest about zero."""

import json
import math
import random

import numpy as np
import pytest

from repotune.evaluate.report import BETTER, UNCLEAR, metric_entry
from repotune.evaluate.significance import RESAMPLES, Paired, paired_means, paired_ratio


def test_no_difference_gives_an_interval_around_zero_and_no_clear_difference():
    rng = random.Random(1)
    base = [rng.random() for _ in range(80)]
    adapted = [value + rng.gauss(0, 0.2) for value in base]  # noise, no effect
    result = paired_means(base, adapted, seed=0)
    low, high = result.delta
    assert low < 0 < high
    entry = metric_entry("commit_message.rouge_l", np.mean(base), np.mean(adapted), 80, result)
    assert entry["verdict"] == UNCLEAR


def test_identical_scores_give_a_zero_interval_and_no_clear_difference():
    scores = [0.1, 0.5, 0.9] * 20
    result = paired_means(scores, scores, seed=0)
    assert result.delta == (0.0, 0.0)
    assert metric_entry("code_change.exact_match", 0.5, 0.5, 60, result)["verdict"] == UNCLEAR


def test_pairing_sees_a_small_consistent_gain_that_unpaired_scores_hide():
    rng = random.Random(2)
    base = [rng.uniform(0, 1) for _ in range(60)]  # prompts differ a lot in difficulty
    adapted = [value + 0.02 for value in base]  # the adapter adds a little to every one
    low, high = paired_means(base, adapted, seed=0).delta
    assert low == pytest.approx(0.02) and high == pytest.approx(0.02)
    # Each model's own interval is wide and the two overlap: only pairing tells them apart.
    result = paired_means(base, adapted, seed=0)
    assert result.base[1] > result.adapted[0]
    entry = metric_entry("commit_message.rouge_l", 0.5, 0.52, 60, result)
    assert entry["verdict"] == BETTER


def test_seeded_and_in_range():
    rng = random.Random(3)
    base = [rng.random() for _ in range(40)]
    adapted = [rng.random() for _ in range(40)]
    first = paired_means(base, adapted, seed=7)
    assert first == paired_means(base, adapted, seed=7)
    assert first != paired_means(base, adapted, seed=8)
    assert first.resamples == RESAMPLES and first.n == 40
    for low, high in (first.base, first.adapted):
        assert min(base + adapted) <= low <= high <= max(base + adapted)
    assert first.base[0] <= np.mean(base) <= first.base[1]


def test_ratio_is_token_weighted():
    # Two kinds of block: long ones the model predicts well, short ones badly. The loss is
    # total nll / total tokens; every resample of identical blocks gives exactly that.
    nll = [10.0, 40.0] * 30
    tokens = [100, 10] * 30
    expected = sum(nll) / sum(tokens)
    result = paired_ratio(nll, nll, tokens, lambda loss: loss, seed=0)
    assert result.base[0] <= expected <= result.base[1]
    assert result.base[1] < 1.0  # a per-block mean would be (0.1 + 4.0) / 2 = 2.05
    transformed = paired_ratio(nll, nll, tokens, np.exp, seed=0)
    assert transformed.base == pytest.approx(tuple(math.exp(b) for b in result.base))


def test_ratio_ignores_blocks_without_tokens_and_handles_nothing():
    assert paired_ratio([], [], [], np.exp, seed=0) is None
    assert paired_ratio([1.0], [1.0], [0], np.exp, seed=0) is None
    assert paired_means([], [], seed=0) is None
    result = paired_ratio([2.0, 5.0], [1.0, 5.0], [4, 0], lambda loss: loss, seed=0)
    assert result.n == 1 and result.delta == (-0.25, -0.25)


def test_lengths_must_agree():
    with pytest.raises(ValueError):
        paired_means([1.0], [1.0, 2.0], seed=0)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0], [1, 2], np.exp, seed=0)


def percentile_bootstrap(values: np.ndarray, seed: int, resamples: int) -> tuple[float, float]:
    """The textbook percentile bootstrap of a mean, from one seeded PCG64 stream."""
    generator = np.random.Generator(np.random.PCG64(seed))
    means = values[generator.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


@pytest.mark.parametrize("resamples", [1, 150, RESAMPLES])
def test_intervals_are_the_2_5th_and_97_5th_percentiles_of_seeded_resamples(resamples):
    # However the resamples are drawn (in chunks or at once), the result is the percentile
    # bootstrap of exactly `resamples` draws of n items, with the seed's PCG64 stream.
    rng = random.Random(4)
    base = np.array([rng.random() for _ in range(50)])
    adapted = base + np.array([rng.gauss(0.1, 0.3) for _ in range(50)])
    result = paired_means(base.tolist(), adapted.tolist(), seed=5, resamples=resamples)
    assert result.base == pytest.approx(percentile_bootstrap(base, 5, resamples))
    assert result.adapted == pytest.approx(percentile_bootstrap(adapted, 5, resamples))
    assert result.delta == pytest.approx(percentile_bootstrap(adapted - base, 5, resamples))
    assert result.resamples == resamples


def test_a_block_of_one_token_counts_in_a_ratio():
    result = paired_ratio([3.0, 1.0], [3.0, 1.0], [1, 1], lambda loss: loss, seed=0)
    assert result.n == 2
    assert result.base[0] < 2.0 < result.base[1]


def test_the_json_form_gives_the_intervals_back():
    result = paired_means([0.1, 0.4, 0.8], [0.2, 0.6, 0.7], seed=0)
    as_json = json.loads(json.dumps(result.as_dict()))
    assert Paired(
        **{key: tuple(v) if isinstance(v, list) else v for key, v in as_json.items()}
    ) == (result)


def test_unequal_lengths_are_named_in_the_error():
    with pytest.raises(ValueError, match="differ in length: 1 and 2"):
        paired_means([1.0], [1.0, 2.0], seed=0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_ratio([1.0], [1.0], [1, 2], np.exp, seed=0)
