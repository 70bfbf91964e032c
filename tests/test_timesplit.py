"""The time split and recency weights, as functions and through curated Parquet files."""

import math
from pathlib import Path

import numpy as np
import pytest

from repotune.curate.timesplit import (
    TEST,
    TRAIN,
    VALIDATION,
    SplitSettings,
    SplitSizes,
    assign_splits,
    recency_weights,
    split_sizes,
)
from repotune.errors import InputError
from testdata.commits import History, run_curate

DAY = 86400


def sizes(total: int, test: float = 0.1, validation: float = 0.1, allow: bool = True) -> SplitSizes:
    return split_sizes(total, SplitSettings(test, validation, allow), "commits.parquet")


def test_split_sizes_from_fractions_and_counts() -> None:
    assert sizes(100) == SplitSizes(train=80, validation=10, test=10)
    assert sizes(10) == SplitSizes(train=8, validation=1, test=1)
    # 0.1 of 25 is 2.5: half rounds up.
    assert sizes(25) == SplitSizes(train=19, validation=3, test=3)
    # Fractions that round to 0 still give test and validation one commit each.
    assert sizes(4) == SplitSizes(train=2, validation=1, test=1)
    assert sizes(100, test=7, validation=0) == SplitSizes(train=93, validation=0, test=7)
    assert sizes(100, test=0.25, validation=12) == SplitSizes(train=63, validation=12, test=25)


def test_tiny_histories_keep_train_and_test() -> None:
    assert sizes(2) == SplitSizes(train=1, validation=0, test=1)
    assert sizes(3, allow=False) == SplitSizes(train=1, validation=1, test=1)
    # Requests larger than the history shrink, test first, and train keeps one commit.
    assert sizes(5, test=50, validation=50) == SplitSizes(train=1, validation=0, test=4)
    assert sizes(5, test=50, validation=50, allow=False) == SplitSizes(
        train=1, validation=1, test=3
    )


@pytest.mark.parametrize(("total", "allow", "needed"), [(0, True, 2), (1, True, 2), (2, False, 3)])
def test_too_few_commits_is_an_input_error(total: int, allow: bool, needed: int) -> None:
    with pytest.raises(InputError) as error:
        sizes(total, allow=allow)
    message = str(error.value)
    assert message.startswith("commits.parquet: ")
    assert f"only {total} commit(s) survived curation" in message
    assert f"at least {needed}" in message
    assert "curate.filters" in message
    assert ("allow_empty_validation" in message) == (not allow)


def test_assign_splits_orders_by_time_and_breaks_ties_by_input_order() -> None:
    # Input order is not time order; the last three share one second.
    times = np.array([50, 10, 40, 20, 30, 30, 30])
    codes = assign_splits(times, SplitSizes(train=4, validation=2, test=1))
    # Sorted: 10(1) 20(3) 30(4) 30(5) | 30(6) 40(2) | 50(0).
    assert codes.tolist() == [TEST, TRAIN, VALIDATION, TRAIN, TRAIN, TRAIN, VALIDATION]


def test_assign_splits_never_puts_an_older_commit_after_a_newer_one() -> None:
    rng = np.random.default_rng(7)
    times = rng.integers(0, 50, size=500)  # many ties
    split = SplitSizes(train=400, validation=50, test=50)
    codes = assign_splits(times, split)
    assert [int((codes == code).sum()) for code in (TRAIN, VALIDATION, TEST)] == [400, 50, 50]
    assert times[codes == TRAIN].max() <= times[codes == VALIDATION].min()
    assert times[codes == VALIDATION].max() <= times[codes == TEST].min()
    assert (assign_splits(times, split) == codes).all()


def test_recency_weights_by_hand() -> None:
    # Train at days 2, 4, 6, 8 (in shuffled input order); validation and test newer.
    times = np.array([6, 2, 8, 4, 9, 10]) * DAY
    codes = np.array([TRAIN, TRAIN, TRAIN, TRAIN, VALIDATION, TEST])
    weights = recency_weights(times, codes, half_life_days=2)
    # Ages from the newest train commit (day 8): 2, 6, 0, 4 days; half-life 2 days.
    assert weights.tolist() == [0.5, 0.125, 1.0, 0.25, 1.0, 1.0]
    ten = recency_weights(times, codes, half_life_days=10)
    assert math.isclose(ten[1], 0.5**0.6)
    for off in (None, 0):
        assert recency_weights(times, codes, off).tolist() == [1.0] * 6


def test_curated_files_are_split_by_time(tmp_path: Path) -> None:
    history = History()
    days = [5, 1, 9, 2, 8, 3, 7, 4, 6, 10, 9.5, 0.5]
    for number, day in enumerate(days):
        history.add(f"Change the parser, step {number}", day=day)
    splits, report = run_curate(
        tmp_path, history.rows, split={"test_size": 3, "validation_size": 2}
    )
    day_of = {row["sha"]: day for row, day in zip(history.rows, days, strict=True)}
    got = {name: [day_of[row["sha"]] for row in rows] for name, rows in splits.items()}
    # Each file keeps input order; test holds the newest three, validation the two before.
    assert got == {
        "train": [5, 1, 2, 3, 4, 6, 0.5],
        "validation": [8, 7],
        "test": [9, 10, 9.5],
    }
    assert report["split"]["validation"]["first_committer_time"] == "2024-01-08T00:00:00Z"
    assert report["split"]["test"]["last_committer_time"] == "2024-01-11T00:00:00Z"


def test_equal_committer_times_split_by_history_order(tmp_path: Path) -> None:
    history = History()
    for number in range(6):
        history.add(f"Tweak the tokenizer, take {number}", day=3)
    splits, _ = run_curate(tmp_path, history.rows, split={"test_size": 2, "validation_size": 1})
    order = [row["sha"] for row in history.rows]
    assert [row["sha"] for row in splits["train"]] == order[:3]
    assert [row["sha"] for row in splits["validation"]] == order[3:4]
    assert [row["sha"] for row in splits["test"]] == order[4:]


def test_recency_weights_in_the_train_file(tmp_path: Path) -> None:
    history = History()
    for day in (2, 4, 6, 8, 9, 10):
        history.add(f"Refine the cache on day {day}", day=day)
    splits, report = run_curate(
        tmp_path,
        history.rows,
        split={"test_size": 1, "validation_size": 1},
        recency_half_life_days=2,
    )
    assert [row["recency_weight"] for row in splits["train"]] == [0.125, 0.25, 0.5, 1.0]
    assert [row["recency_weight"] for row in splits["validation"] + splits["test"]] == [1.0, 1.0]
    weights = report["recency_weights"]
    assert (weights["train_min"], weights["train_max"], weights["train_mean"]) == (
        0.125,
        1.0,
        0.46875,
    )
    # (sum w)^2 / sum w^2 = 1.875^2 / 1.328125
    assert weights["train_effective_commits"] == round(1.875**2 / 1.328125, 3)


def test_a_two_commit_history_gets_train_and_test(tmp_path: Path) -> None:
    history = History()
    history.add("Add the request parser")
    history.add("Handle empty request bodies")
    splits, report = run_curate(tmp_path, history.rows)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [1, 0, 1]
    assert splits["test"][0]["sha"] == history.rows[1]["sha"]
    assert report["split"]["validation"] == {
        "commits": 0,
        "first_committer_time": None,
        "last_committer_time": None,
    }


def test_a_history_curated_away_is_an_input_error(tmp_path: Path) -> None:
    history = History()
    history.add("Add the request parser")
    history.add("wip")
    history.add("Bump lodash", author="dependabot[bot]")
    with pytest.raises(InputError, match=r"only 1 commit\(s\) survived curation"):
        run_curate(tmp_path, history.rows)
    assert not (tmp_path / "dataset" / "train.parquet").exists()
    assert not (tmp_path / "dataset" / "curation.json").exists()


def test_a_cut_through_many_commits_of_one_second_follows_input_order() -> None:
    # Extraction writes parents before children, so among commits of one second the later in
    # input order is the later in history: a cut through them must never put an earlier one
    # into a newer split. Enough ties that an unstable sort would reorder them.
    times = np.random.default_rng(3).integers(0, 3, size=300)
    codes = assign_splits(times, SplitSizes(train=100, validation=100, test=100))
    for second in range(3):
        in_input_order = codes[times == second]
        assert (np.diff(in_input_order) >= 0).all(), f"second {second}: {in_input_order}"
