"""Stage curate end to end on real Parquet files: filters, outputs, curation.json."""

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repotune.curate import stage as curate_module
from repotune.curate.filters import CommitFilter, SeenKeys
from repotune.curate.table import DATASET
from repotune.errors import InputError
from testdata.commits import History, all_rows, change, run_curate, settings, write_commits

ALL_OFF = {
    name: False
    for name in (
        "bots",
        "merges",
        "reverts",
        "trivial_messages",
        "generated_files",
        "binary_only",
        "oversized",
        "duplicates",
    )
}


def patch(*added: str, start: int = 1) -> str:
    body = "".join(f"+{line}\n" for line in added)
    return f"@@ -{start},1 +{start},{len(added) + 1} @@ def handler():\n context\n{body}"


def labelled_history() -> tuple[History, dict[str, list[str]]]:
    """One commit per filter case, plus a look-alike each filter must keep.

    Returns the history and, per filter name (or "kept"), the shas it must account for.
    """
    history = History()
    expect: dict[str, list[str]] = {}

    def add(label: str, *args: object, **kwargs: object) -> str:
        sha = history.add(*args, **kwargs)["sha"]
        expect.setdefault(label, []).append(sha)
        return sha

    add("kept", "Add the request parser")
    add("bots", "Bump lodash from 4.17.20 to 4.17.21", author="dependabot[bot]")
    add("bots", "Update dependency pytest to v8", author="renovate[bot]")
    add("bots", "Regenerate the API client files", author="github-actions[bot]")
    add("kept", "Teach the cache to expire entries", author="Abbott Robotham")
    add("merges", "Merge the feature branch", parents=2)
    add("merges", "Merge branch 'feature/x' into main")
    add("merges", "Merge pull request #12 from org/fix-parser")
    add("kept", "Merger of two config sources into one")
    add("reverts", 'Revert "Add the request parser"', f"This reverts commit {'a' * 40}.")
    add("reverts", "Back out the cache change", "This reverts commit 1234567abc.")
    add("kept", "Revertible transactions for the store")
    add("trivial_messages", "wip")
    add("trivial_messages", "WIP: half of the tokenizer")
    add("trivial_messages", "Update.")
    add("trivial_messages", "")
    add("trivial_messages", "Initial commit")
    add("trivial_messages", "Fix")
    add("kept", "Fix", "The parser crashed on an empty request body.")
    add("kept", "Update the parser for nested lists")
    lockfiles = [
        change("src/api.py", patch("x = 1")),
        change("package-lock.json", patch('"lodash": "4.17.21"')),
        change("web/vendor/lib/util.go", patch("package util")),
        change("static/app.min.js", patch("var a=1;")),
    ]
    expect["web"] = [add("kept", "Call the API from the web client", files=lockfiles)]
    only_generated = [change("yarn.lock", patch("lodash@4")), change("dist/app.js", patch("a"))]
    add("no_files", "Refresh the lockfile and the bundle", files=only_generated)
    add("no_files", "An empty commit to trigger CI", files=[])
    add("kept", "Vendorise nothing, despite the name", files=[change("vendorx/a.go", patch("a"))])
    binary = change("assets/logo.png", None, is_binary=True)
    add("binary_only", "Replace the logo with the new one", files=[binary])
    add("kept", "Add the logo and its loader", files=[binary, change("src/logo.py", patch("L"))])
    add("oversized", "Reformat every module at once", files=[change("src/big.py", "+x\n" * 700)])
    add("kept", "Add a largish module exactly", files=[change("src/ok.py", "+x\n" * 600)])
    picked = patch("return cache.get(key)", start=10)
    add("kept", "Read through the cache", files=[change("src/cache.py", picked)])
    moved = patch("return cache.get(key)", start=42)
    add("duplicates", "Read through the cache", files=[change("src/cache.py", moved)])
    add("kept", "Read through the cache in the CLI", files=[change("src/cli.py", picked)])
    return history, expect


FILTERS = {"max_patch_bytes": 1800}


def test_each_filter_drops_what_it_should_and_keeps_look_alikes(tmp_path: Path) -> None:
    history, expect = labelled_history()
    splits, report = run_curate(tmp_path, history.rows, filters=FILTERS)

    kept = [row["sha"] for row in all_rows(splits)]
    assert sorted(kept) == sorted(expect["kept"])
    assert report["input"]["commits"] == len(history.rows)
    assert report["kept_commits"] == len(expect["kept"])
    for name, entry in report["filters"].items():
        if name == "generated_files":  # drops files, see the next test
            continue
        assert entry["enabled"] is True
        assert entry["dropped_commits"] == len(expect.get(name, [])), name
        assert entry["example_shas"] == expect.get(name, [])[:5], name


def test_generated_files_are_dropped_and_totals_recomputed(tmp_path: Path) -> None:
    history, expect = labelled_history()
    splits, report = run_curate(tmp_path, history.rows, filters=FILTERS)

    web = next(row for row in all_rows(splits) if row["subject"].startswith("Call the API"))
    assert [f["path"] for f in web["files"]] == ["src/api.py"]
    assert (web["files_changed"], web["additions"], web["deletions"]) == (1, 1, 0)
    assert web["patch_bytes"] == web["files"][0]["patch_bytes"]
    generated = report["filters"]["generated_files"]
    # 3 files from the web commit, 2 from the commit left with none.
    assert generated["dropped_files"] == 5
    assert generated["commits_touched"] == 2
    assert generated["example_shas"] == [expect["web"][0], expect["no_files"][0]]


def test_every_filter_can_be_switched_off(tmp_path: Path) -> None:
    history, expect = labelled_history()
    splits, report = run_curate(tmp_path, history.rows, filters=ALL_OFF)

    kept = {row["sha"] for row in all_rows(splits)}
    # Only commits without files go: there is nothing in them to learn from.
    everything = {row["sha"] for row in history.rows}
    assert kept == everything - {expect["no_files"][1]}
    assert report["filters"]["no_files"]["dropped_commits"] == 1
    assert all(not report["filters"][name]["enabled"] for name in ALL_OFF)
    web = next(row for row in all_rows(splits) if row["subject"].startswith("Call the API"))
    assert web["files_changed"] == 4


def test_trivial_message_settings_are_honoured(tmp_path: Path) -> None:
    history = History()
    short = history.add("Add parser")["sha"]
    custom = history.add("Bump version")["sha"]
    for number in range(4):
        history.add(f"Add the request parser, part {number}")
    splits, report = run_curate(
        tmp_path,
        history.rows,
        filters={"min_message_words": 3, "trivial_subjects": ["bump version"]},
    )
    kept = {row["sha"] for row in all_rows(splits)}
    assert short not in kept and custom not in kept
    assert report["filters"]["trivial_messages"]["dropped_commits"] == 2


def test_bad_patterns_fail_with_the_key_named(tmp_path: Path) -> None:
    history = History()
    history.add()
    with pytest.raises(InputError, match=r"bot_patterns.*not a valid regular expression"):
        run_curate(tmp_path, history.rows, filters={"bot_patterns": ["[unclosed"]})


def test_output_schema_and_provenance(tmp_path: Path) -> None:
    history, _ = labelled_history()
    run_curate(tmp_path, history.rows, filters=FILTERS)

    for name in ("train", "validation", "test"):
        schema = pq.read_schema(tmp_path / "dataset" / f"{name}.parquet")
        assert schema.remove_metadata() == DATASET
        assert schema.metadata[b"repotune.split"] == name.encode()
        assert schema.metadata[b"repotune.head"] == history.rows[-1]["sha"].encode()
        used = json.loads(schema.metadata[b"repotune.curate.settings"])
        assert used["filters"]["max_patch_bytes"] == 1800
        rows = pq.read_table(tmp_path / "dataset" / f"{name}.parquet").to_pylist()
        assert {row["split"] for row in rows} == {name}


def test_curation_report_describes_the_run(tmp_path: Path) -> None:
    history, expect = labelled_history()
    splits, report = run_curate(tmp_path, history.rows, filters=FILTERS)

    assert report["input"]["head"] == history.rows[-1]["sha"]
    sizes = {name: report["split"][name]["commits"] for name in ("train", "validation", "test")}
    assert sizes == {name: len(rows) for name, rows in splits.items()}
    assert sum(sizes.values()) == len(expect["kept"])
    newest = max(row["committer_time"] for row in splits["test"])
    assert report["split"]["test"]["last_committer_time"] == newest.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report["settings"]["split"]["test_size"] == 0.1
    assert report["recency_weights"]["train_max"] == 1.0
    assert 0 < report["recency_weights"]["train_min"] < 1
    assert set(report["redactions"]) >= {"private_key", "jwt", "password", "email"}


def test_same_input_and_config_give_the_same_bytes(tmp_path: Path) -> None:
    history, _ = labelled_history()
    source = write_commits(tmp_path / "commits.parquet", history.rows)
    produced = []
    for run in ("one", "two"):
        out = tmp_path / run
        outputs = {name: out / f"{name}.parquet" for name in ("train", "validation", "test")}
        curate_module.curate(source, outputs, out / "curation.json", settings(filters=FILTERS))
        produced.append({path.name: path.read_bytes() for path in sorted(out.iterdir())})
    assert produced[0] == produced[1]
    assert sorted(produced[0]) == [
        "curation.json",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]


def test_batches_smaller_than_the_history_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history, _ = labelled_history()
    for number in range(40):
        history.add(f"Grow the history, step {number}")
    whole, whole_report = run_curate(tmp_path / "whole", history.rows, filters=FILTERS)
    monkeypatch.setattr(curate_module, "BATCH_COMMITS", 7)
    batched, batched_report = run_curate(tmp_path / "batched", history.rows, filters=FILTERS)
    assert batched == whole
    for report in (whole_report, batched_report):
        report["input"].pop("path")
    assert batched_report == whole_report
    assert pq.ParquetFile(tmp_path / "batched" / "dataset" / "train.parquet").num_row_groups > 1


def test_input_that_is_not_a_commits_table_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    outputs = {name: out / f"{name}.parquet" for name in ("train", "validation", "test")}
    text = tmp_path / "commits.parquet"
    text.write_text("not parquet")
    with pytest.raises(InputError, match="cannot be read as Parquet"):
        curate_module.curate(text, outputs, out / "curation.json", settings())
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"sha": ["a"], "subject": ["b"]}), other)
    with pytest.raises(InputError, match=r"not a commits table \(missing or mistyped: parents"):
        curate_module.curate(other, outputs, out / "curation.json", settings())
    assert not out.exists() or not any(out.iterdir())


def commit_filter(**filters: Any) -> CommitFilter:
    """The compiled filters for the schema defaults plus ``filters`` overrides."""
    return CommitFilter(settings(filters=filters).filters)


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        # `**` crosses directories, `*` does not.
        ("docs/**/*.html", ["docs/a/b/page.html", "docs/x/page.html"], ["docs/page.htm"]),
        ("build/*.js", ["build/app.js"], ["build/sub/app.js", "lib/build/app.js"]),
        # `?` is one character, never a slash.
        ("file?.txt", ["file1.txt", "a/fileA.txt"], ["file.txt", "file12.txt", "file/.txt"]),
        # A leading slash anchors at the repository root, like .gitignore.
        ("/dist/out.js", ["dist/out.js"], ["x/dist/out.js"]),
        # A trailing slash is a directory at any depth, not a name prefix.
        ("vendor/", ["vendor/x.go", "lib/vendor/x.go"], ["vendored/x.go", "lib/vendor"]),
    ],
)
def test_generated_globs_match_paths_like_gitignore(
    glob: str, matches: list[str], misses: list[str]
) -> None:
    generated = commit_filter(generated_globs=[glob])
    assert [path for path in matches if not generated.is_generated(path)] == []
    assert [path for path in misses if generated.is_generated(path)] == []


def test_no_patterns_or_globs_drop_nothing() -> None:
    nothing = commit_filter(bot_patterns=[], trivial_subjects=[], generated_globs=[])
    bot = {"author_name": "", "subject": "", "body": "", "is_merge": False, "parents": []}
    assert nothing.message_verdict({**bot, "subject": "wip", "body": "more words here"}) is None
    assert not nothing.is_generated("package-lock.json")


def test_bot_patterns_ignore_case() -> None:
    assert (
        commit_filter(bot_patterns=["dependabot"]).message_verdict(
            {"author_name": "Dependabot[BOT]", "subject": "", "body": "", "is_merge": False}
        )
        == "bots"
    )


@pytest.mark.parametrize("key", ["bot_patterns", "trivial_subjects"])
def test_a_bad_pattern_names_its_key_and_what_to_do(key: str) -> None:
    with pytest.raises(InputError) as error:
        commit_filter(**{key: ["ok", "(unclosed"]})
    message = str(error.value)
    assert message.startswith(f"config['curate']['filters']['{key}']: '(unclosed'")
    assert message.endswith("fix or remove it")


@pytest.mark.parametrize(
    ("is_merge", "parents", "subject", "merge"),
    [
        (True, ["a"], "Add x", True),  # extraction saw a merge
        (False, ["a", "b"], "Add x", True),  # two parents
        (False, ["a"], "Merge branch 'topic' into main", True),  # squashed merge subject
        (False, ["a"], "Merge sort for the index", False),
    ],
)
def test_merges_by_flag_by_parents_or_by_subject(
    is_merge: bool, parents: list[str], subject: str, merge: bool
) -> None:
    commit = {"is_merge": is_merge, "parents": parents, "subject": subject}
    assert CommitFilter.is_merge(commit) is merge


def test_trivial_subjects_ignore_case_space_and_trailing_punctuation() -> None:
    trivial = commit_filter(trivial_subjects=["wip"], min_message_words=1)
    for subject in ("WIP.", "wip!", "  Wip  ", "wip.!"):
        assert trivial.is_trivial(subject, "a body of several words"), subject
    assert not trivial.is_trivial(".wip", "")
    assert not trivial.is_trivial("wip on parser", "")


def test_the_word_minimum_counts_subject_and_body_and_is_inclusive() -> None:
    three = commit_filter(trivial_subjects=[], min_message_words=3)
    assert three.is_trivial("Fix", "the bug") is False
    assert three.is_trivial("Fix", "bug") is True
    # A minimum of 0 or 1 still drops an empty message, and keeps a one-word one.
    for minimum in (0, 1):
        one = commit_filter(trivial_subjects=[], min_message_words=minimum)
        assert one.is_trivial("", "") is True
        assert one.is_trivial("Refactor", "") is False


def test_generated_files_switched_off_keeps_and_counts_nothing() -> None:
    files = [change("package-lock.json"), change("src/app.py")]
    assert commit_filter(generated_files=False).split_files(files) == (files, 0)
    assert commit_filter().split_files(files) == ([files[1]], 1)


def test_duplicates_of_a_path_git_could_not_decode_are_found() -> None:
    # git paths that are not UTF-8 arrive with surrogate escapes; they still hash.
    duplicates = commit_filter()
    files = [change("caf\udce9.py")]
    assert duplicates.is_duplicate(files) is False
    assert duplicates.is_duplicate(files) is True


def test_seen_keys_hold_every_64_bit_key_across_merges() -> None:
    seen = SeenKeys(recent_limit=2)
    assert 0 not in seen
    keys = [2**64 - 1, 0, 2**63, 12345, 2**53 + 1]
    for key in keys:
        seen.add(key)
        seen.add(key)  # adding again changes nothing
    assert len(seen) == len(keys)
    assert all(key in seen for key in keys)
    # Neighbours of the stored keys, which a float64 array would confuse with them.
    assert [key for key in (2**64 - 2, 1, 2**63 + 1, 12344, 2**53) if key in seen] == []
