"""Extraction checked against git plumbing on real fixture repositories."""

import hashlib
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repotune.config import resolve_config
from repotune.errors import InputError
from repotune.extract import table as commit_table
from repotune.extract.stage import ExtractSettings, extract_to_parquet
from testdata.gitrepo import GitRepo, build_hard_cases


def settings(**overrides: object) -> ExtractSettings:
    return ExtractSettings.from_config(resolve_config({"extract": overrides})["extract"])


def extract(repo: Path, out: Path, **overrides: object) -> tuple[list[dict], dict]:
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    stats = extract_to_parquet(
        repo=repo,
        head=head,
        output=out / "commits.parquet",
        stats_path=out / "commits.stats.json",
        cache=out / "cache" / "commits.parquet",
        settings=settings(**overrides),
        threads=1,
    )
    return pq.read_table(out / "commits.parquet").to_pylist(), stats


def plumbing(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


def diff_tree(repo: Path, sha: str) -> list[tuple[str, str, str | None]]:
    """(status letter, path, old path) per changed path, straight from git diff-tree."""
    out = plumbing(repo, "diff-tree", "-r", "-z", "--root", "-M", "-C", "--no-commit-id", sha)
    tokens = out.split(b"\x00")
    entries = []
    i = 0
    while i < len(tokens) and tokens[i].startswith(b":"):
        status = tokens[i].split()[-1].decode()[0]
        if status in "RC":
            entries.append((status, tokens[i + 2].decode(), tokens[i + 1].decode()))
            i += 3
        else:
            entries.append((status, tokens[i + 1].decode(), None))
            i += 2
    return entries


def numstat(repo: Path, sha: str) -> list[tuple[int | None, int | None]]:
    out = plumbing(repo, "diff-tree", "-r", "-z", "--root", "-M", "-C", "--numstat", sha)
    counts = []
    for record in out.split(b"\x00"):
        parts = record.split(b"\t")
        if len(parts) == 3 and parts[0][:1] in b"0123456789-":
            add, delete = parts[0], parts[1]
            counts.append(
                (None if add == b"-" else int(add), None if delete == b"-" else int(delete))
            )
    return counts


@pytest.fixture(scope="module")
def hard_cases(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    return build_hard_cases(tmp_path_factory.mktemp("hard") / "repo")


@pytest.fixture(scope="module")
def extracted(hard_cases: GitRepo, tmp_path_factory: pytest.TempPathFactory):
    return extract(hard_cases.path, tmp_path_factory.mktemp("out"), max_patch_bytes=4096)


def by_subject(rows: list[dict], subject: str) -> dict:
    (row,) = [row for row in rows if row["subject"] == subject]
    return row


def test_rows_are_the_non_merge_commits_oldest_first(hard_cases, extracted):
    rows, stats = extracted
    expected = plumbing(
        hard_cases.path, "rev-list", "--reverse", "--date-order", "--no-merges", "HEAD"
    )
    assert [row["sha"] for row in rows] == expected.decode().split()
    assert stats["merges_skipped"] == 1
    assert stats["commits"] == len(rows)
    assert not any(row["is_merge"] for row in rows)


def test_schema_and_metadata_match_the_contract(hard_cases, extracted, tmp_path):
    _, stats = extracted
    out = tmp_path / "again"
    extract(hard_cases.path, out)
    schema = pq.read_schema(out / "commits.parquet")
    assert schema.remove_metadata() == commit_table.COMMITS
    assert schema.metadata[b"repotune.head"].decode() == stats["head"]


def test_files_and_line_counts_match_diff_tree(hard_cases, extracted):
    rows, _ = extracted
    for row in rows:
        got = [(f["change_type"], f["path"], f["old_path"]) for f in row["files"]]
        assert got == diff_tree(hard_cases.path, row["sha"]), row["subject"]
        counts = [(f["additions"], f["deletions"]) for f in row["files"]]
        assert counts == numstat(hard_cases.path, row["sha"]), row["subject"]
        assert row["additions"] == sum(a or 0 for a, _ in counts)
        assert row["files_changed"] == len(row["files"])


def test_messages_parents_and_times_match_git(hard_cases, extracted):
    rows, _ = extracted
    for row in rows:
        sha = row["sha"]
        parents = (
            plumbing(hard_cases.path, "rev-list", "--parents", "-n1", sha).decode().split()[1:]
        )
        assert row["parents"] == parents
        stamp = int(plumbing(hard_cases.path, "log", "-1", "--format=%at", sha))
        assert int(row["author_time"].timestamp()) == stamp
        assert row["author_utc_offset_minutes"] == 120
        assert row["committer_utc_offset_minutes"] == -90
    utf8 = by_subject(rows, "Root commit")
    assert utf8["body"] == "Adds the first files."
    assert utf8["parents"] == []


def test_declared_encoding_and_invalid_bytes_are_decoded(hard_cases, extracted):
    rows, _ = extracted
    latin = by_subject(rows, "Caf\u00e9 au lait")
    assert latin["encoding"] == "iso-8859-1"
    assert latin["body"] == "na\u00efve body"
    raw = plumbing(hard_cases.path, "cat-file", "commit", latin["sha"])
    assert b"encoding iso-8859-1" in raw and "Caf\u00e9".encode("iso-8859-1") in raw
    broken = next(row for row in rows if row["subject"].startswith("Broken"))
    assert broken["subject"] == "Broken \ufffd\ufffd bytes"
    assert broken["body"] == "body \ufffd( end"


def test_author_email_is_hashed_not_stored(extracted):
    rows, _ = extracted
    expected = hashlib.sha256(b"ada@example.org").hexdigest()
    assert {row["author_email_sha256"] for row in rows} == {expected}
    assert {row["author_email"] for row in rows} == {None}


def test_hard_file_cases(extracted):
    rows, _ = extracted
    odd = by_subject(rows, "Odd file names")
    assert sorted(f["path"] for f in odd["files"]) == sorted(
        ["dir with space/file name.txt", 'quote"d.txt', "naïve-ünïcode.py"]
    )
    assert all(f["patch"].startswith("@@ -0,0 +1 @@\n+") for f in odd["files"])
    (binary,) = by_subject(rows, "Binary file")["files"]
    assert binary["is_binary"] and binary["patch"] is None and binary["additions"] is None
    (renamed,) = by_subject(rows, "Rename app to main")["files"]
    assert (renamed["change_type"], renamed["old_path"], renamed["similarity"]) == (
        "R",
        "app.py",
        100,
    )
    assert renamed["patch"] == ""
    copy = {f["change_type"]: f for f in by_subject(rows, "Copy main")["files"]}
    assert copy["C"]["old_path"] == "main.py" and copy["C"]["path"] == "main_copy.py"
    assert copy["M"]["patch"] == "@@ -1 +1,2 @@\n print('hi')\n+print('more')\n"
    (mode,) = by_subject(rows, "Make README executable")["files"]
    assert (mode["old_mode"], mode["new_mode"], mode["patch"]) == ("100644", "100755", "")
    (sub,) = by_subject(rows, "Bump submodule")["files"]
    assert sub["is_submodule"] and sub["patch"].endswith("+Subproject commit " + "2" * 40 + "\n")
    (typechange,) = by_subject(rows, "Symlink becomes a file")["files"]
    assert typechange["change_type"] == "T"
    assert "+now a file" in typechange["patch"]
    assert by_subject(rows, "An empty commit")["files"] == []


def test_huge_patch_is_truncated_at_a_line_with_exact_counts(extracted):
    rows, stats = extracted
    (big,) = by_subject(rows, "Huge patch")["files"]
    assert big["patch_truncated"] and big["additions"] == 20000
    assert len(big["patch"].encode()) <= 4096 and big["patch"].endswith("\n")
    assert big["patch_bytes"] > 100_000
    assert stats["patches_truncated"] == 1


def test_merges_can_be_included(hard_cases, tmp_path):
    rows, stats = extract(hard_cases.path, tmp_path, include_merges=True)
    merge = by_subject(rows, "Merge branch side")
    assert merge["is_merge"] and len(merge["parents"]) == 2
    assert [f["path"] for f in merge["files"]] == ["side.py"]
    assert stats["merges_skipped"] == 0


def test_parallel_workers_give_the_same_file(hard_cases, tmp_path):
    serial, _ = extract(hard_cases.path, tmp_path / "one", row_group_commits=2)
    parallel, _ = extract(hard_cases.path, tmp_path / "two", row_group_commits=2, workers=3)
    assert parallel == serial
    assert pq.ParquetFile(tmp_path / "two" / "commits.parquet").num_row_groups > 3


def test_bare_and_shallow_clones(hard_cases, tmp_path):
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(hard_cases.path), str(bare)], check=True)
    full, _ = extract(hard_cases.path, tmp_path / "full")
    from_bare, stats = extract(bare, tmp_path / "b")
    assert from_bare == full and stats["shallow"] is False
    shallow = tmp_path / "shallow"
    url = hard_cases.path.as_uri()
    subprocess.run(["git", "clone", "-q", "--depth", "3", url, str(shallow)], check=True)
    rows, stats = extract(shallow, tmp_path / "s")
    assert stats["shallow"] is True
    listed = plumbing(shallow, "rev-list", "--reverse", "--date-order", "--no-merges", "HEAD")
    assert [row["sha"] for row in rows] == listed.decode().split()
    shallow_file = plumbing(shallow, "rev-parse", "--git-path", "shallow").decode().strip()
    boundary = set((shallow / shallow_file).read_text().split())
    full_by_sha = {row["sha"]: row for row in full}
    for row in rows:
        if row["sha"] in boundary:
            assert row["parents"] == []
        else:
            assert row == full_by_sha[row["sha"]]
    assert boundary & {row["sha"] for row in rows}


def test_incremental_reads_only_new_commits_and_equals_full(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    for i in range(5):
        repo.commit(f"Commit {i}", {f"f{i}.py": f"x = {i}\n"})
    out = tmp_path / "out"
    _, first = extract(repo.path, out)
    assert (first["commits"], first["incremental"]) == (5, False)
    repo.commit("New commit", {"new.py": "y = 1\n"})
    rows, second = extract(repo.path, out)
    assert (second["commits"], second["commits_extracted"], second["incremental"]) == (6, 1, True)
    fresh, _ = extract(repo.path, tmp_path / "fresh")
    assert rows == fresh
    assert json.loads((out / "commits.stats.json").read_text())["commits_extracted"] == 1


def test_rewritten_history_or_new_settings_extract_everything(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    for i in range(3):
        repo.commit(f"Commit {i}", {"f.py": f"x = {i}\n"})
    out = tmp_path / "out"
    extract(repo.path, out)
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.commit("Rewritten", {"f.py": "x = 9\n"})
    _, stats = extract(repo.path, out)
    assert (stats["incremental"], stats["commits_extracted"]) == (False, 3)
    _, stats = extract(repo.path, out, max_patch_bytes=2048)
    assert stats["incremental"] is False


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p / "missing", "path does not exist"),
        (lambda p: p, "is not a git repository"),
        (lambda p: GitRepo(p / "empty").path, "repository has no commits"),
    ],
)
def test_bad_repository_is_one_clear_error_and_writes_nothing(tmp_path, make, problem):
    target = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=problem) as error:
        extract_to_parquet(
            repo=target,
            head="HEAD",
            output=out / "commits.parquet",
            stats_path=out / "stats.json",
            cache=out / "cache.parquet",
            settings=settings(),
        )
    assert "\n" not in str(error.value) and f"'{target}'" in str(error.value)
    assert not out.exists()
