"""Extract then curate on real git repositories with histories a user's repository can have:
rebased commits whose author and committer times disagree, and a rename away from a path
that held a secret."""

import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from repotune.config import resolve_config
from repotune.curate.stage import curate
from repotune.extract.stage import ExtractSettings, extract_to_parquet
from testdata.commits import settings as curate_settings
from testdata.gitrepo import BASE_TIME, GitRepo, git_env

HOUR = 3600
SPLITS = ("train", "validation", "test")


def extract_and_curate(repo: GitRepo, out: Path, **sections: dict[str, Any]) -> dict[str, list]:
    """The rows of each curated split file, as the extract and curate rules would leave them."""
    extract_to_parquet(
        repo=repo.path,
        head=repo.head(),
        output=out / "commits.parquet",
        stats_path=out / "commits.stats.json",
        cache=out / "cache" / "commits.parquet",
        settings=ExtractSettings.from_config(resolve_config({})["extract"]),
        threads=1,
    )
    outputs = {name: out / "dataset" / f"{name}.parquet" for name in SPLITS}
    report = out / "dataset" / "curation.json"
    curate(out / "commits.parquet", outputs, report, curate_settings(**sections))
    return {name: pq.read_table(path).to_pylist() for name, path in outputs.items()}


def commit_at(repo: GitRepo, message: str, files: dict[str, str], author: int, committer: int):
    """A commit whose author and committer dates are set apart, as a rebase leaves them."""
    for name, content in files.items():
        repo.write(name, content)
    env = {
        **git_env(committer),
        "GIT_AUTHOR_DATE": f"{author} +0000",
        "GIT_COMMITTER_DATE": f"{committer} +0000",
    }
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *args], cwd=repo.path, env=env, check=True, capture_output=True)
    return repo.head()


def test_a_rebased_history_is_split_by_committer_time(tmp_path: Path) -> None:
    # Committer hours out of history order, author hours in the reverse of committer order:
    # splitting by author time, or by history order, would put other commits in test.
    committer_hours = [3, 1, 8, 2, 7, 4, 6, 5]
    repo = GitRepo(tmp_path / "data")
    hour_of = {}
    for number, hour in enumerate(committer_hours):
        sha = commit_at(
            repo,
            f"Teach the parser rule number {number}",
            {f"pkg/rule{number}.py": f"def rule{number}():\n    return {number}\n"},
            author=BASE_TIME + (10 - hour) * HOUR,
            committer=BASE_TIME + hour * HOUR,
        )
        hour_of[sha] = hour
    splits = extract_and_curate(
        repo, tmp_path / "out", split={"test_size": 2, "validation_size": 2}
    )
    hours = {name: sorted(hour_of[row["sha"]] for row in rows) for name, rows in splits.items()}
    assert hours == {"train": [1, 2, 3, 4], "validation": [5, 6], "test": [7, 8]}
    for row in splits["test"]:
        assert row["committer_time"].timestamp() == BASE_TIME + hour_of[row["sha"]] * HOUR
        assert row["author_time"] < row["committer_time"]


def test_a_secret_in_a_renamed_files_old_path_is_redacted(tmp_path: Path) -> None:
    key = "AKIA" + "Q7RZ2M4XW9KJ3T6B"
    repo = GitRepo(tmp_path / "data")
    body = "".join(f"setting_{n} = {n}\n" for n in range(20))
    repo.commit("Add the settings for the deploy", {f"config/{key}.py": body})
    repo.git("mv", f"config/{key}.py", "config/deploy.py")
    repo.commit_staged("Give the deploy settings a plain name")
    for number in range(4):
        repo.commit(f"Add helper number {number}", {f"pkg/h{number}.py": f"x = {number}\n"})

    splits = extract_and_curate(repo, tmp_path / "out", split={"test_size": 1})
    files = [change for rows in splits.values() for row in rows for change in row["files"]]
    renamed = [change for change in files if change["path"] == "config/deploy.py"]
    assert len(renamed) == 1 and renamed[0]["old_path"] == "config/<KEY>.py"
    added = [change for change in files if change["old_path"] is None]
    assert "config/<KEY>.py" in {change["path"] for change in added}
    assert key not in repr(splits)
