"""Paired bootstrap intervals for base-vs-adapted differences, and when a sample is too small.

The base and the adapted model are scored on the same test items (commits' blocks for
perplexity, prompts for generated text, tests for behaviour), so their difference is estimated
by resampling the items, not each model's scores on their own: every resample draws ``n`` items
with replacement and scores *both* models on that same draw (Koehn 2004, "Statistical
Significance Tests for Machine Translation Evaluation", EMNLP; the paired test of sacrebleu's
``significance.py``). The 2.5th and 97.5th percentiles of the ``RESAMPLES`` resampled values
are the 95% interval (the percentile bootstrap, Efron & Tibshirani 1993, ch. 13). Draws come
from numpy's PCG64 seeded with ``evaluate.seed``, so a rerun gives the same intervals.

Two statistics:

* :func:`paired_means`: the mean of per-item scores (BLEU, ROUGE-L, edit similarity, exact
  match, pass rate), each item weighing the same;
* :func:`paired_ratio`: ``transform(sum(numerator) / sum(denominator))`` over items, for
  perplexity: the numerator is a block's summed negative log-likelihood and the denominator its
  token count, so each resample's loss weighs every token the same (a ratio estimator, the way
  the full-sample perplexity is computed), not every block.

Below ``MIN_TEST_COMMITS`` held-out commits the report gives no verdict on the metrics measured
on them: with a handful of commits a bootstrap resamples the same few items and its interval is
far too narrow to be believed (the percentile interval's coverage falls well below 95% for small
n; Efron & Tibshirani, ch. 13.7). 30 is the usual rule of thumb for a mean to be roughly normal.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
MIN_TEST_COMMITS = 30
# Resamples drawn at once: bounds the index matrix to CHUNK x n.
_CHUNK = 100


@dataclass(frozen=True)
class Paired:
    """95% intervals ``(low, high)`` of the base value, the adapted value and their difference
    (adapted - base), from ``resamples`` paired resamples of ``n`` items."""

    base: tuple[float, float]
    adapted: tuple[float, float]
    delta: tuple[float, float]
    n: int
    resamples: int

    def as_dict(self) -> dict[str, list[float] | int]:
        """JSON-ready: each interval as ``[low, high]``."""
        return {
            "base": list(self.base),
            "adapted": list(self.adapted),
            "delta": list(self.delta),
            "n": self.n,
            "resamples": self.resamples,
        }


def _draws(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index matrices of shape (chunk, n), ``resamples`` rows in all, from one seeded stream."""
    generator = np.random.Generator(np.random.PCG64(seed))
    done = 0
    while done < resamples:
        rows = min(_CHUNK, resamples - done)
        yield generator.integers(0, n, size=(rows, n))
        done += rows


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def _paired(
    n: int,
    statistic: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    seed: int,
    resamples: int,
) -> Paired | None:
    if n == 0:
        return None
    base_values, adapted_values = [], []
    for indices in _draws(n, resamples, seed):
        base, adapted = statistic(indices)
        base_values.append(base)
        adapted_values.append(adapted)
    base_all, adapted_all = np.concatenate(base_values), np.concatenate(adapted_values)
    return Paired(
        base=_interval(base_all),
        adapted=_interval(adapted_all),
        delta=_interval(adapted_all - base_all),
        n=n,
        resamples=resamples,
    )


def paired_means(
    base: Sequence[float], adapted: Sequence[float], seed: int, resamples: int = RESAMPLES
) -> Paired | None:
    """Intervals of the mean of per-item scores; ``base[i]`` and ``adapted[i]`` score the same
    item. None when there are no items."""
    if len(base) != len(adapted):
        raise ValueError(f"paired scores differ in length: {len(base)} and {len(adapted)}")
    base_scores = np.asarray(base, dtype=np.float64)
    adapted_scores = np.asarray(adapted, dtype=np.float64)

    def means(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return base_scores[rows].mean(axis=1), adapted_scores[rows].mean(axis=1)

    return _paired(len(base_scores), means, seed, resamples)


def paired_ratio(
    base_numerator: Sequence[float],
    adapted_numerator: Sequence[float],
    denominator: Sequence[float],
    transform: Callable[[np.ndarray], np.ndarray],
    seed: int,
    resamples: int = RESAMPLES,
) -> Paired | None:
    """Intervals of ``transform(sum(numerator) / sum(denominator))`` over resampled items (items
    with a zero denominator count for nothing). None when no item has a non-zero denominator."""
    if not len(base_numerator) == len(adapted_numerator) == len(denominator):
        raise ValueError("paired numerators and denominator differ in length")
    weights = np.asarray(denominator, dtype=np.float64)
    keep = weights > 0
    base_sums = np.asarray(base_numerator, dtype=np.float64)[keep]
    adapted_sums = np.asarray(adapted_numerator, dtype=np.float64)[keep]
    weights = weights[keep]

    def ratios(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = weights[rows].sum(axis=1)
        return (
            transform(base_sums[rows].sum(axis=1) / total),
            transform(adapted_sums[rows].sum(axis=1) / total),
        )

    return _paired(len(weights), ratios, seed, resamples)
