"""Time-based train/validation/test split and recency weights.

A model of a repository is used on the repository's *future*; a random split would let it
see next month's code while being scored on last month's, and would flatter it. So the
split is by time: commits are ordered by committer time, the newest are ``test``, the ones
just before them ``validation``, everything older ``train``.

Ties: commits with the same committer second keep their input order (extraction writes
parents before children), and the cut falls between positions in that order. A cut can
therefore separate two commits of the same second, always putting the later one in history
into the newer split; that is what makes "every test commit is newer than or as new as every
train commit" hold exactly while the split sizes stay as configured.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from repotune.errors import InputError

TRAIN, VALIDATION, TEST = range(3)
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class SplitSettings:
    """The ``curate.split`` config section (defaults live in config/schema.yaml).

    A size below 1 is a fraction of the curated commits, a whole number of 1 or more is a
    count (as in scikit-learn's ``train_test_split``).
    """

    test_size: float
    validation_size: float
    allow_empty_validation: bool

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "SplitSettings":
        return cls(**section)


def _requested(size: float, total: int) -> int:
    """Commits asked for by a size setting; a fraction rounds half up."""
    if size < 1:
        return math.floor(size * total + 0.5)
    return int(size)


@dataclass(frozen=True)
class SplitSizes:
    """How many commits each split gets, in time order: train, then validation, then test."""

    train: int
    validation: int
    test: int


def split_sizes(total: int, settings: SplitSettings, source: str) -> SplitSizes:
    """Split sizes for ``total`` curated commits.

    Test and train always get at least one commit. A non-zero validation size gets at least
    one too; when there are too few commits for that, validation is left empty if
    ``allow_empty_validation`` is on, and an :class:`InputError` names ``source`` otherwise.
    Requests larger than the history are shrunk, test first served, so that train (and a
    validation that may not be empty) keep at least one commit.
    """
    wants_validation = settings.validation_size > 0
    needed = 3 if wants_validation and not settings.allow_empty_validation else 2
    if total < needed:
        raise InputError(
            source,
            f"only {total} commit(s) survived curation, and the split needs at least {needed} "
            "(train and test" + (", validation" if needed == 3 else "") + " one each)",
            "curate a repository with more history, or switch off filters under "
            "curate.filters (the log lists what each dropped)"
            + ("" if needed == 2 else ", or set curate.split.allow_empty_validation: true"),
        )
    reserved = 1 if needed == 3 else 0
    test = min(max(1, _requested(settings.test_size, total)), total - 1 - reserved)
    validation = _requested(settings.validation_size, total)
    if wants_validation:
        validation = max(1, validation)
    validation = min(validation, total - 1 - test)
    return SplitSizes(train=total - test - validation, validation=validation, test=test)


def assign_splits(committer_times: np.ndarray, sizes: SplitSizes) -> np.ndarray:
    """Split code (:data:`TRAIN`, :data:`VALIDATION`, :data:`TEST`) per commit, in input order.

    ``committer_times`` are in input order; a stable sort keeps that order among ties.
    """
    order = np.argsort(committer_times, kind="stable")
    codes = np.empty(len(committer_times), dtype=np.int8)
    codes[order[: sizes.train]] = TRAIN
    codes[order[sizes.train : sizes.train + sizes.validation]] = VALIDATION
    codes[order[sizes.train + sizes.validation :]] = TEST
    return codes


def recency_weights(
    committer_times: np.ndarray, codes: np.ndarray, half_life_days: float | None
) -> np.ndarray:
    """Per-commit training weight: ``w = 0.5 ** (age_days / half_life_days)``.

    ``age_days`` is measured back from the newest *training* commit (so the freshest training
    data weighs 1 and data one half-life older weighs 0.5); validation and test rows weigh 1,
    as does every row when ``half_life_days`` is None or 0.
    """
    weights = np.ones(len(committer_times), dtype=np.float64)
    train = codes == TRAIN
    if not half_life_days or not train.any():
        return weights
    times = committer_times.astype(np.float64)
    age_days = (times[train].max() - times[train]) / SECONDS_PER_DAY
    weights[train] = np.power(0.5, age_days / half_life_days)
    return weights
