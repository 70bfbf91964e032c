"""The paired tests: BCa intervals resampled by commit (checked against the textbook formulas on
the same draws), the exact sign test, Holm's adjustment and the verdict rule."""

import json
import math
import random
import time
from statistics import NormalDist

import numpy as np
import pytest

from repotune.evaluate.significance import (
    BETTER,
    BINARY,
    MEAN,
    MIN_TEST_COMMITS,
    MISSING,
    RESAMPLES,
    TOO_FEW,
    UNCLEAR,
    WORSE,
    Paired,
    bca_interval,
    bca_p_value,
    compare,
    decide,
    holm,
    paired_means,
    paired_ratio,
    resample_indices,
    sign_test,
)

NORMAL = NormalDist()


def textbook_bca(
    statistic, units: int, seed: int, resamples: int, confidence: float = 0.95
) -> tuple[float, float]:
    """BCa as Efron & Tibshirani (1993) write it, one resample at a time: ``statistic(rows)``
    on the seeded draws, z0 from the share of replicates below the estimate (ties half), the
    acceleration from the leave-one-out jackknife (eq. 14.15), then the adjusted percentiles
    (eq. 14.10). (On the same draws, scipy 1.17's ``bootstrap(method="BCa")`` agrees with the
    module to 1e-14 standard errors; scipy is not in the project's environment.)"""
    estimate = statistic(np.arange(units))
    draws = np.concatenate(list(resample_indices(units, resamples, seed)))
    replicates = np.array([statistic(rows) for rows in draws])
    share = (np.sum(replicates < estimate) + np.sum(replicates <= estimate)) / (2 * resamples)
    z0 = NORMAL.inv_cdf(share)
    jackknife = np.array([statistic(np.delete(np.arange(units), i)) for i in range(units)])
    spread = jackknife.mean() - jackknife
    a = np.sum(spread**3) / (6 * np.sum(spread**2) ** 1.5)
    levels = []
    for tail in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = NORMAL.inv_cdf(tail)
        levels.append(NORMAL.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return tuple(float(v) for v in np.quantile(replicates, levels))


def skewed_pair(n: int, seed: int, shift: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.2, n)
    return base, base + rng.normal(shift, 0.15, n) ** 2 - 0.02


@pytest.mark.parametrize(("n", "resamples"), [(30, 400), (80, RESAMPLES)])
def test_bca_of_a_mean_difference_is_the_textbook_bca_on_the_same_draws(n, resamples):
    base, adapted = skewed_pair(n, seed=n)
    result = paired_means(base, adapted, seed=11, resamples=resamples)
    assert result.delta == pytest.approx(
        textbook_bca(lambda rows: np.mean(adapted[rows] - base[rows]), n, 11, resamples),
        rel=1e-9,
    )
    assert result.base == pytest.approx(
        textbook_bca(lambda rows: np.mean(base[rows]), n, 11, resamples), rel=1e-9
    )
    assert (result.n, result.resamples) == (n, resamples)


def test_bca_of_a_ratio_weighs_every_token_on_the_same_draws():
    rng = np.random.default_rng(3)
    tokens = rng.integers(5, 3000, 40).astype(float)  # commits of very different sizes
    base_nll = tokens * rng.normal(2.0, 0.4, 40)
    adapted_nll = tokens * rng.normal(1.9, 0.4, 40)

    def ratio(nll):
        return lambda rows: math.exp(nll[rows].sum() / tokens[rows].sum())

    result = paired_ratio(base_nll, adapted_nll, tokens, np.exp, seed=5, resamples=500)
    assert result.delta == pytest.approx(
        textbook_bca(lambda r: ratio(adapted_nll)(r) - ratio(base_nll)(r), 40, 5, 500), rel=1e-9
    )
    assert result.adapted == pytest.approx(textbook_bca(ratio(adapted_nll), 40, 5, 500), rel=1e-9)


def test_each_side_of_a_ratio_may_have_its_own_tokens():
    """Two runs that tokenized the same commits differently (benchmarks/real_histories.py
    compares two adapters' losses on them): each side's ratio is over its own tokens, on the
    same drawn commits; a commit one side has no token of is left out."""
    rng = np.random.default_rng(4)
    tokens = rng.integers(5, 3000, 40).astype(float)
    other = tokens + rng.integers(-4, 5, 40)  # the same commits, a few tokens more or fewer
    first, second = tokens * rng.normal(2.0, 0.4, 40), other * rng.normal(1.9, 0.4, 40)

    def loss(nll, count):
        return lambda rows: nll[rows].sum() / count[rows].sum()

    result = paired_ratio(first, second, tokens, np.log1p, 5, 500, adapted_denominator=other)
    assert result.delta == pytest.approx(
        textbook_bca(
            lambda r: math.log1p(loss(second, other)(r)) - math.log1p(loss(first, tokens)(r)),
            40, 5, 500,
        ),
        rel=1e-9,
    )  # fmt: skip
    assert result.adapted == pytest.approx(
        textbook_bca(lambda r: math.log1p(loss(second, other)(r)), 40, 5, 500), rel=1e-9
    )
    gap = paired_ratio([1.0, 2.0], [1.0, 2.0], [1, 1], np.log1p, 0, adapted_denominator=[1, 0])
    assert gap.n == 1


def test_the_draws_do_not_depend_on_the_chunking():
    whole = np.random.Generator(np.random.PCG64(9)).integers(0, 300, size=(RESAMPLES, 300))
    assert np.array_equal(np.concatenate(list(resample_indices(300, RESAMPLES, 9))), whole)
    assert len(list(resample_indices(300_000, 20, 9))) > 1  # big n: several chunks


def test_p_inverts_the_interval():
    """The bootstrap p is the level at which the BCa interval reaches zero: the (1 - p) BCa
    interval has an end at zero, and p < 0.05 exactly when the 95% interval excludes zero."""
    agreed = 0
    for seed in range(40):
        base, adapted = skewed_pair(50, seed, shift=0.02 * (seed % 5))
        result = paired_means(base, adapted, seed=seed)
        low, high = result.delta
        assert (result.p < 0.05) == (low > 0 or high < 0)
        agreed += 1
        if 0.002 < result.p < 0.95:
            draws = np.concatenate(list(resample_indices(50, RESAMPLES, seed)))
            replicates = (adapted[draws] - base[draws]).mean(axis=1)
            jackknife = ((adapted - base).sum() - (adapted - base)) / 49
            estimate = float(np.mean(adapted - base))
            assert bca_p_value(estimate, replicates, jackknife) == pytest.approx(result.p)
            at_p = bca_interval(estimate, replicates, jackknife, confidence=1 - result.p)
            assert min(abs(bound) for bound in at_p) < 0.02 * (high - low)
    assert agreed == 40


def test_no_difference_gives_an_interval_around_zero_and_no_clear_difference():
    rng = random.Random(1)
    base = [rng.random() for _ in range(80)]
    adapted = [value + rng.gauss(0, 0.2) for value in base]  # noise, no effect
    result = compare(base, adapted, MEAN)
    low, high = result.interval.delta
    assert low < 0 < high and result.p > 0.05
    assert result.verdict == UNCLEAR


def test_identical_scores_give_a_zero_interval_p_one_and_no_clear_difference():
    scores = [0.1, 0.5, 0.9] * 20
    result = compare(scores, scores, MEAN)
    assert result.interval.delta == (0.0, 0.0) and result.p == 1.0
    assert result.verdict == UNCLEAR
    assert compare(scores, scores, BINARY).p == 1.0


def test_pairing_sees_a_small_consistent_gain_that_unpaired_scores_hide():
    rng = random.Random(2)
    base = [rng.uniform(0, 1) for _ in range(60)]  # prompts differ a lot in difficulty
    adapted = [value + 0.02 for value in base]  # the adapter adds a little to every one
    result = compare(base, adapted, MEAN)
    low, high = result.interval.delta
    assert low == pytest.approx(0.02) and high == pytest.approx(0.02)
    # Each model's own interval is wide and the two overlap: only pairing tells them apart.
    assert result.interval.base[1] > result.interval.adapted[0]
    assert result.p == 1 / RESAMPLES  # no replicate reaches zero: p is not resolved below
    assert result.verdict == BETTER
    assert compare(adapted, base, MEAN).verdict == WORSE
    assert compare(adapted, base, MEAN, higher_is_better=False).verdict == BETTER


def test_seeded_and_in_range():
    rng = random.Random(3)
    base = [rng.random() for _ in range(40)]
    adapted = [rng.random() for _ in range(40)]
    first = paired_means(base, adapted, seed=7)
    assert first == paired_means(base, adapted, seed=7)
    assert first != paired_means(base, adapted, seed=8)
    assert first.resamples == RESAMPLES == 2000 and first.n == 40
    for low, high in (first.base, first.adapted):
        assert min(base + adapted) <= low <= high <= max(base + adapted)
    assert first.base[0] <= np.mean(base) <= first.base[1]


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [
        (4, 0, 0.125),  # 2 * 0.5**4: 4 wins out of 30 is not "better"
        (5, 0, 0.0625),
        (6, 0, 0.03125),
        (10, 2, 2 * (1 + 12 + 66) / 2**12),
        (3, 11, 2 * (1 + 14 + 91 + 364) / 2**14),
        (0, 0, 1.0),
        (7, 7, 1.0),
    ],
)
def test_the_sign_test_is_mcnemars_exact_binomial_test(wins, losses, p):
    ties = 30 - wins - losses
    base = [0.0] * wins + [1.0] * losses + [1.0] * (ties // 2) + [0.0] * (ties - ties // 2)
    adapted = [1.0] * wins + [0.0] * losses + [1.0] * (ties // 2) + [0.0] * (ties - ties // 2)
    assert sign_test(base, adapted) == pytest.approx(p, rel=1e-12)
    assert sign_test(adapted, base) == pytest.approx(p, rel=1e-12)


def test_four_wins_and_no_loss_in_thirty_is_no_verdict_though_the_interval_excludes_zero():
    base, adapted = [0.0] * 30, [1.0] * 4 + [0.0] * 26
    result = compare(base, adapted, BINARY)
    assert result.interval.delta[0] > 0  # a bootstrap interval alone would say "better"
    assert result.p == 0.125 and result.verdict == UNCLEAR
    assert compare(base, [1.0] * 7 + [0.0] * 23, BINARY).verdict == BETTER  # p = 0.0156


def test_items_of_one_commit_are_resampled_together():
    """Five questions from each of 30 commits, the commit's difficulty shared by its questions:
    n is 30 commits, and the interval is wider than the one that treats 150 items as
    independent."""
    rng = np.random.default_rng(4)
    effect = np.repeat(rng.normal(0.05, 0.3, 30), 5)
    base = rng.uniform(0, 1, 150)
    adapted = base + effect + rng.normal(0, 0.02, 150)
    commits = [f"{i // 5:040x}" for i in range(150)]
    grouped = compare(base, adapted, MEAN, groups=commits)
    alone = compare(base, adapted, MEAN)
    assert (grouped.n, alone.n) == (30, 150)
    width = {
        name: r.interval.delta[1] - r.interval.delta[0]
        for name, r in (("g", grouped), ("a", alone))
    }
    assert width["g"] > 1.8 * width["a"]
    assert grouped.delta == pytest.approx(float(np.mean(adapted - base)))
    # A 0/1 metric's sign test counts commits: a commit with more wins than losses is one win.
    wins = [1.0, 1.0, 0.0] * 4
    sha = [f"{i // 3}" for i in range(12)]
    assert sign_test([0.0, 0.0, 1.0] * 4, wins, sha) == 0.125  # 4 commits, each +1
    with pytest.raises(ValueError, match="commits and scores differ in length"):
        paired_means([1.0, 2.0], [1.0, 2.0], seed=0, groups=["a"])


def test_the_commit_bootstrap_covers_the_truth_where_the_item_bootstrap_does_not():
    """Simulated runs shaped like an evaluation: 40 commits of 1-12 items each, items of one
    commit sharing its effect. The 95% interval by commit covers the true mean difference about
    95% of the time; treating items as independent covers it far less often."""
    rng = np.random.default_rng(12)
    covered = {"commit": 0, "item": 0}
    runs = 120
    for run in range(runs):
        sizes = rng.integers(1, 13, 40)
        commits = np.repeat(np.arange(40), sizes).astype(str)
        effect = np.repeat(rng.normal(0.0, 0.5, 40), sizes)
        base = rng.normal(0, 0.1, len(commits))
        adapted = base + effect + rng.normal(0, 0.05, len(commits))
        for name, groups in (("commit", commits), ("item", None)):
            low, high = paired_means(base, adapted, run, 500, groups).delta
            covered[name] += low <= 0.0 <= high
    assert covered["commit"] / runs >= 0.88
    assert covered["item"] / runs <= 0.65


def test_ratio_is_token_weighted():
    # Two kinds of commit: long ones the model predicts well, short ones badly. The loss is
    # total nll / total tokens; every resample of identical commits gives exactly that.
    nll = [10.0, 40.0] * 30
    tokens = [100, 10] * 30
    expected = sum(nll) / sum(tokens)
    result = paired_ratio(nll, nll, tokens, lambda loss: loss, seed=0)
    assert result.base[0] <= expected <= result.base[1]
    assert result.base[1] < 1.0  # a per-commit mean would be (0.1 + 4.0) / 2 = 2.05
    assert result.delta == (0.0, 0.0) and result.p == 1.0


def test_ratio_ignores_commits_without_tokens_and_handles_nothing():
    assert paired_ratio([], [], [], np.exp, seed=0) is None
    assert paired_ratio([1.0], [1.0], [0], np.exp, seed=0) is None
    assert paired_means([], [], seed=0) is None
    result = paired_ratio([2.0, 5.0], [1.0, 5.0], [4, 0], lambda loss: loss, seed=0)
    assert result.n == 1 and result.delta == (-0.25, -0.25)
    assert math.isnan(result.p)  # one commit: every resample is the same, nothing is tested
    empty = compare([], [], BINARY)
    assert (empty.verdict, empty.p, empty.interval) == (MISSING, None, None)


def test_a_nan_bound_gives_no_verdict():
    # The estimate below every replicate: BCa's bias correction is infinite, no interval.
    assert all(math.isnan(v) for v in bca_interval(0.0, np.array([1.0, 2.0, 3.0]), np.zeros(3)))
    assert math.isnan(bca_p_value(0.0, np.array([1.0, 2.0]), np.zeros(2)))
    assert decide(0.5, (math.nan, 0.9), 0.001, 40, True) == MISSING
    assert decide(0.5, (0.1, 0.9), math.nan, 40, True) == MISSING
    assert decide(0.5, (None, 0.9), 0.001, 40, True) == MISSING
    assert decide(0.5, (0.1, 0.9), 0.001, 40, True) == BETTER
    nan_interval = Paired((0, 1), (0, 1), (math.nan, 1.0), 40, 10, math.nan)
    assert json.loads(json.dumps(nan_interval.as_dict()))["delta"] == [None, 1.0]


def test_a_verdict_needs_p_below_alpha_the_interval_on_the_same_side_and_enough_commits():
    assert decide(0.5, (0.1, 0.9), 0.06, 40, True) == UNCLEAR  # p too large
    assert decide(0.5, (-0.1, 0.9), 0.01, 40, True) == UNCLEAR  # interval disagrees
    assert decide(0.5, (0.1, 0.9), 0.01, MIN_TEST_COMMITS - 1, True) == TOO_FEW
    assert decide(0.5, (0.1, 0.9), 0.01, 40, True, enough_commits=False) == TOO_FEW
    assert decide(-0.5, (-0.9, -0.1), 0.01, 40, False) == BETTER
    assert decide(None, (0.1, 0.9), 0.01, 40, True) == MISSING


def test_holm_by_hand():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # Sorted 0.01, 0.03, 0.04: 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04).
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"a": 0.5, "b": 0.9}) == {"a": 1.0, "b": 1.0}
    assert holm({}) == {}


def test_three_hundred_commits_take_milliseconds():
    base, adapted = skewed_pair(300, seed=1)
    started = time.perf_counter()
    paired_means(base, adapted, seed=0)
    assert time.perf_counter() - started < 0.5  # about 3 ms on one core


def test_the_json_form_gives_the_intervals_back():
    result = paired_means([0.1, 0.4, 0.8], [0.2, 0.6, 0.7], seed=0)
    as_json = json.loads(json.dumps(result.as_dict()))
    assert Paired(
        **{key: tuple(v) if isinstance(v, list) else v for key, v in as_json.items()}
    ) == (result)
    compared = json.loads(json.dumps(compare([0.0] * 3, [1.0] * 3, BINARY).as_dict()))
    assert compared["p"] == 0.25 and compared["verdict"] == TOO_FEW


def test_unequal_lengths_and_unknown_kinds_are_named_in_the_error():
    with pytest.raises(ValueError, match="differ in length: 1 and 2"):
        paired_means([1.0], [1.0, 2.0], seed=0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_ratio([1.0], [1.0], [1, 2], np.exp, seed=0)
    with pytest.raises(ValueError, match="kind is 'ratio'"):
        compare([1.0], [1.0], "ratio")
