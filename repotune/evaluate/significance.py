"""Paired tests for base-vs-adapted differences: BCa bootstrap intervals resampled by commit,
exact sign tests for 0/1 scores, Holm's adjustment, and the verdict rule.

The base and the adapted model are scored on the same held-out items, so their difference is
estimated by resampling the items, not each model's scores on their own: every resample draws
``n`` units with replacement and scores *both* models on that same draw (Koehn 2004, EMNLP; the
paired test of sacrebleu's ``significance.py``). The unit resampled is the **commit**: items of
one commit (a commit's blocks' tokens, several FIM questions from one commit's files) are not
independent, so they enter or leave a resample together (the cluster bootstrap, Davison &
Hinkley 1997, sec. 3.8), and ``n`` is the number of commits. Each statistic is a ratio over
commits, ``transform(sum(numerator) / sum(denominator))``: a mean of per-item scores is the
per-commit score sums over the per-commit item counts (each item weighs the same, as in the
full-sample mean), and perplexity is the per-commit negative log-likelihood over the per-commit
token counts (each token weighs the same, as in the training loss).

Intervals are bias-corrected and accelerated (BCa, Efron 1987; Efron & Tibshirani 1993,
ch. 14): the 95% interval is the pair of bootstrap quantiles at levels
``Phi(z0 + (z0 + z)/(1 - a (z0 + z)))`` for ``z = Phi^-1(0.025), Phi^-1(0.975)``, where ``z0``
corrects for the replicates' median bias and the acceleration ``a`` (from the leave-one-commit-
out jackknife) for skew, as ``scipy.stats.bootstrap(method="BCa")`` computes them. Its coverage
error is O(1/n) against the percentile interval's O(1/sqrt(n)). ``RESAMPLES`` = 2,000 draws,
from numpy's PCG64 seeded with ``evaluate.seed``: a rerun gives the same intervals.

p-values, for the null hypothesis "no difference":

* means (BLEU, ROUGE-L, edit similarity, perplexity): the BCa interval inverted, i.e. twice the
  smaller tail level at which the BCa interval's end reaches zero. ``p < 0.05`` exactly when the
  95% BCa interval excludes zero (up to the quantiles' interpolation), so test and interval
  agree; a bootstrap p is not resolved below ``1 / RESAMPLES``;
* 0/1 scores (exact matches, pass rates): the exact two-sided sign test on the commits whose
  score sums differ between the models; with one item per commit it is McNemar's exact test
  (a binomial test on the discordant pairs): 4 wins and no loss give p = 2 * 0.5**4 = 0.125.

A verdict (:func:`decide`) is ``better`` or ``worse`` only on at least ``MIN_TEST_COMMITS``
commits, with ``p < ALPHA`` and an interval of finite bounds that excludes zero on the side of
the estimate; the report first applies Holm's adjustment (:func:`holm`) to the p of every
metric but the primary one. 30 is the usual rule of thumb for a mean to be roughly normal; with
fewer commits a bootstrap resamples the same handful of units and its interval is far too
narrow to be believed (Efron & Tibshirani, ch. 13.7).
"""

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
MIN_TEST_COMMITS = 30
# Kinds of per-item score: any number (the mean is tested by the bootstrap) or 0/1 (sign test).
MEAN, BINARY = "mean", "binary"
BOOTSTRAP_TEST, SIGN_TEST = "BCa bootstrap", "exact sign test (McNemar)"
BETTER, WORSE, UNCLEAR, TOO_FEW, MISSING = (
    "better", "worse", "no clear difference", "too few to tell", "n/a",
)  # fmt: skip
# Index matrices hold at most this many entries (rows x n) at a time.
_CHUNK_ENTRIES = 1 << 20
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Paired:
    """95% BCa intervals ``(low, high)`` of the base value, the adapted value and their
    difference (adapted - base), from ``resamples`` paired resamples of ``n`` commits, and
    ``p``: the bootstrap p-value of "no difference" (the BCa interval inverted). A bound is NaN
    when the BCa interval cannot be computed (the estimate lies outside every replicate)."""

    base: tuple[float, float]
    adapted: tuple[float, float]
    delta: tuple[float, float]
    n: int
    resamples: int
    p: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: each interval as ``[low, high]``, a NaN as null."""
        return {
            "base": [_finite_or_none(v) for v in self.base],
            "adapted": [_finite_or_none(v) for v in self.adapted],
            "delta": [_finite_or_none(v) for v in self.delta],
            "n": self.n,
            "resamples": self.resamples,
            "p": _finite_or_none(self.p),
        }


@dataclass(frozen=True)
class Comparison:
    """One paired comparison, judged on its own (no multiplicity adjustment): the two values,
    their difference, its interval, the p-value of the test ``test`` and the verdict."""

    base: float | None
    adapted: float | None
    delta: float | None
    interval: Paired | None
    p: float | None
    test: str
    verdict: str

    @property
    def n(self) -> int:
        """Commits (or items, when no commits were given) resampled."""
        return 0 if self.interval is None else self.interval.n

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "base": self.base,
            "adapted": self.adapted,
            "delta": self.delta,
            "interval": None if self.interval is None else self.interval.as_dict(),
            "p": None if self.p is None else _finite_or_none(self.p),
            "test": self.test,
            "verdict": self.verdict,
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index matrices of shape (rows, n), ``resamples`` rows in all, from one seeded PCG64
    stream: the same draws whatever the chunking."""
    generator = np.random.Generator(np.random.PCG64(seed))
    rows_at_once = max(1, _CHUNK_ENTRIES // max(n, 1))
    done = 0
    while done < resamples:
        rows = min(rows_at_once, resamples - done)
        yield generator.integers(0, n, size=(rows, n))
        done += rows


def _quantile_level(replicates: np.ndarray, value: float) -> float:
    """The share of replicates below ``value``, ties counted half (as scipy does)."""
    below = np.count_nonzero(replicates < value)
    at_or_below = np.count_nonzero(replicates <= value)
    return (below + at_or_below) / (2 * len(replicates))


def acceleration(jackknife: np.ndarray) -> float:
    """BCa's acceleration from leave-one-out values (Efron & Tibshirani, eq. 14.15); 0 when
    the jackknife values do not vary."""
    spread = np.mean(jackknife) - jackknife
    scale = float(np.sum(spread**2))
    if scale == 0 or not math.isfinite(scale):
        return 0.0
    return float(np.sum(spread**3)) / (6 * scale**1.5)


def bca_interval(
    estimate: float, replicates: np.ndarray, jackknife: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The BCa interval of ``estimate`` from its bootstrap ``replicates`` and its leave-one-out
    ``jackknife`` values; (nan, nan) when the bias correction is infinite (the estimate lies
    below or above every replicate)."""
    share = _quantile_level(replicates, estimate)
    if not 0 < share < 1:
        return math.nan, math.nan
    z0 = _NORMAL.inv_cdf(share)
    a = acceleration(jackknife)
    tail = (1 - confidence) / 2
    levels = []
    for z in (_NORMAL.inv_cdf(tail), _NORMAL.inv_cdf(1 - tail)):
        shifted = z0 + z
        denominator = 1 - a * shifted
        if denominator <= 0:
            return math.nan, math.nan
        levels.append(_NORMAL.cdf(z0 + shifted / denominator))
    low, high = np.quantile(replicates, levels)
    return float(low), float(high)


def bca_p_value(
    estimate: float, replicates: np.ndarray, jackknife: np.ndarray, null: float = 0.0
) -> float:
    """Two-sided p of ``null`` by inverting the BCa interval: the level ``alpha`` at which an
    end of the BCa interval reaches ``null``, doubled. With ``G`` the replicates' distribution,
    ``Phi^-1(G(null)) - z0 = u / (1 + a u)`` at ``u = z0 + z_alpha``. Not below
    ``1 / len(replicates)``; NaN when the bias correction is infinite."""
    share = _quantile_level(replicates, estimate)
    if not 0 < share < 1:
        return math.nan
    z0 = _NORMAL.inv_cdf(share)
    a = acceleration(jackknife)
    floor = 1 / len(replicates)
    reached = _quantile_level(replicates, null)
    if reached in (0.0, 1.0):
        return floor
    w = _NORMAL.inv_cdf(reached) - z0
    if 1 + a * w <= 0:  # beyond every end the BCa map reaches
        return floor
    level = _NORMAL.cdf(w / (1 + a * w) - z0)
    return max(floor, min(1.0, 2 * min(level, 1 - level)))


def _bca(
    estimate: float, replicates: np.ndarray, jackknife: np.ndarray
) -> tuple[tuple[float, float], float]:
    return bca_interval(estimate, replicates, jackknife), bca_p_value(
        estimate, replicates, jackknife
    )


def paired_ratio(
    base_numerator: Sequence[float],
    adapted_numerator: Sequence[float],
    denominator: Sequence[float],
    transform: Callable[[np.ndarray], np.ndarray],
    seed: int,
    resamples: int = RESAMPLES,
    adapted_denominator: Sequence[float] | None = None,
) -> Paired | None:
    """BCa intervals of ``transform(sum(numerator) / sum(denominator))`` over resampled units
    (one unit per position: a commit's summed scores or negative log-likelihood, and its item or
    token count; units with a zero denominator count for nothing). ``adapted_denominator``, when
    given, is the adapted side's own (two runs that tokenized a commit differently: each side's
    ratio over its own tokens, a unit kept where both have some). None without a unit."""
    own = denominator if adapted_denominator is None else adapted_denominator
    denominators = {"base": denominator, "adapted": own}
    if not len(base_numerator) == len(adapted_numerator) == len(denominator) == len(own):
        raise ValueError("paired numerators and denominator differ in length")
    weights = {name: np.asarray(d, dtype=np.float64) for name, d in denominators.items()}
    keep = (weights["base"] > 0) & (weights["adapted"] > 0)
    sums = {
        "base": np.asarray(base_numerator, dtype=np.float64)[keep],
        "adapted": np.asarray(adapted_numerator, dtype=np.float64)[keep],
    }
    weights = {name: w[keep] for name, w in weights.items()}
    n = len(weights["base"])
    if n == 0:
        return None
    total = {name: w.sum() for name, w in weights.items()}
    estimate = {
        name: float(transform(np.asarray(s.sum() / total[name]))) for name, s in sums.items()
    }
    replicates: dict[str, list[np.ndarray]] = {"base": [], "adapted": []}
    for rows in resample_indices(n, resamples, seed):
        for name, values in sums.items():
            drawn = weights[name][rows].sum(axis=1)
            replicates[name].append(transform(values[rows].sum(axis=1) / drawn))
    drawn_values = {name: np.concatenate(parts) for name, parts in replicates.items()}
    if n > 1:
        jackknife = {
            name: transform((s.sum() - s) / (total[name] - weights[name]))
            for name, s in sums.items()
        }
    else:
        jackknife = {name: np.zeros(1) for name in sums}
    intervals = {name: _bca(estimate[name], drawn_values[name], jackknife[name]) for name in sums}
    delta = _bca(
        estimate["adapted"] - estimate["base"],
        drawn_values["adapted"] - drawn_values["base"],
        jackknife["adapted"] - jackknife["base"],
    )
    return Paired(
        base=intervals["base"][0],
        adapted=intervals["adapted"][0],
        delta=delta[0],
        n=n,
        resamples=resamples,
        p=delta[1] if n > 1 else math.nan,  # one unit: every resample is the same, no test
    )


def by_commit(
    base: Sequence[float], adapted: Sequence[float], groups: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-commit sums of each model's scores and per-commit item counts (``groups[i]`` is item
    ``i``'s commit; None: every item is its own unit), commits in sorted order."""
    if len(base) != len(adapted):
        raise ValueError(f"paired scores differ in length: {len(base)} and {len(adapted)}")
    base_scores = np.asarray(base, dtype=np.float64)
    adapted_scores = np.asarray(adapted, dtype=np.float64)
    if groups is None:
        return base_scores, adapted_scores, np.ones(len(base_scores))
    if len(groups) != len(base):
        raise ValueError(f"commits and scores differ in length: {len(groups)} and {len(base)}")
    _, unit = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    count = np.bincount(unit) if len(unit) else np.zeros(0)
    return (
        np.bincount(unit, weights=base_scores, minlength=len(count)),
        np.bincount(unit, weights=adapted_scores, minlength=len(count)),
        count.astype(np.float64),
    )


def paired_means(
    base: Sequence[float],
    adapted: Sequence[float],
    seed: int,
    resamples: int = RESAMPLES,
    groups: Sequence[str] | None = None,
) -> Paired | None:
    """BCa intervals of the mean of per-item scores, ``base[i]`` and ``adapted[i]`` scoring the
    same item, resampled by commit when ``groups`` gives each item's commit. None without
    items."""
    base_sums, adapted_sums, counts = by_commit(base, adapted, groups)
    return paired_ratio(base_sums, adapted_sums, counts, _identity, seed, resamples)


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def sign_test(
    base: Sequence[float], adapted: Sequence[float], groups: Sequence[str] | None = None
) -> float:
    """Exact two-sided sign test of "neither model scores higher": over commits (or items),
    wins are commits where the adapted model's score sum is higher, losses where it is lower;
    ``p = min(1, 2 * P(X <= min(wins, losses)))`` for ``X ~ Binomial(wins + losses, 1/2)``.
    With one 0/1 item per commit this is McNemar's exact test. 1 when no commit differs."""
    base_sums, adapted_sums, _ = by_commit(base, adapted, groups)
    difference = adapted_sums - base_sums
    wins, losses = int(np.count_nonzero(difference > 0)), int(np.count_nonzero(difference < 0))
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**trials)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment (Holm 1979): sorted ascending, the i-th of m p-values
    becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``. Controls the chance of any false
    verdict among the m at the nominal level, under any dependence between them."""
    ordered = sorted(p_values, key=lambda name: (p_values[name], name))
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def decide(
    delta: float | None,
    interval: Sequence[float | None] | None,
    p: float | None,
    n: int,
    higher_is_better: bool,
    enough_commits: bool = True,
    alpha: float = ALPHA,
) -> str:
    """The verdict: ``better``/``worse`` only with at least ``MIN_TEST_COMMITS`` commits,
    ``p < alpha`` and an interval of finite bounds excluding zero on the estimate's side;
    ``too few to tell`` below the gate; ``n/a`` without a value, an interval bound or a p;
    else ``no clear difference``."""
    if delta is None or not math.isfinite(delta) or interval is None:
        return MISSING
    if not enough_commits or n < MIN_TEST_COMMITS:
        return TOO_FEW
    low, high = interval
    if any(v is None or not math.isfinite(v) for v in (low, high, p)):
        return MISSING
    if p >= alpha:  # type: ignore[operator]
        return UNCLEAR
    if low > 0 and delta > 0:  # type: ignore[operator]
        up = True
    elif high < 0 and delta < 0:  # type: ignore[operator]
        up = False
    else:
        return UNCLEAR
    return BETTER if up == higher_is_better else WORSE


def compare(
    base: Sequence[float],
    adapted: Sequence[float],
    kind: str,
    seed: int = 0,
    higher_is_better: bool = True,
    groups: Sequence[str] | None = None,
    resamples: int = RESAMPLES,
) -> Comparison:
    """Compare two systems' per-item scores on the same items: means, BCa interval of the
    difference (by commit when ``groups`` gives each item's commit), the p of the test that
    fits ``kind`` (``MEAN``: the bootstrap's; ``BINARY``: the exact sign test) and the verdict
    of :func:`decide`, on its own (no multiplicity adjustment)."""
    if kind not in (MEAN, BINARY):
        raise ValueError(f"kind is {kind!r}; use {MEAN!r} or {BINARY!r}")
    interval = paired_means(base, adapted, seed, resamples, groups)
    test = SIGN_TEST if kind == BINARY else BOOTSTRAP_TEST
    if interval is None:
        return Comparison(None, None, None, None, None, test, MISSING)
    base_mean, adapted_mean = float(np.mean(base)), float(np.mean(adapted))
    delta = adapted_mean - base_mean
    p = sign_test(base, adapted, groups) if kind == BINARY else interval.p
    verdict = decide(delta, interval.delta, p, interval.n, higher_is_better)
    return Comparison(base_mean, adapted_mean, delta, interval, p, test, verdict)
