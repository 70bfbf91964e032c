"""Checks and facts about the data repository, asked of the git command line.

The workflow resolves the repository's HEAD when it parses the Snakefile and puts the sha in
the extraction rule's params, so Snakemake's params trigger reruns extraction exactly when
HEAD moves. A bad path therefore has to fail here, early, in one readable line: git missing
from PATH, a path that is not a repository, one owned by another user (git's "dubious
ownership"), one without commits. A shallow clone works but holds only part of the history,
which :func:`shallow_warning` says in one line.

Plain ``git`` subprocesses, not GitPython: importing GitPython without git on PATH raises a
long ImportError before any check could explain it.
"""

import os
import shutil
import subprocess
from pathlib import Path

from repotune.errors import InputError

SUBJECT = "config 'repo'"


def git_executable() -> str:
    """The git program on PATH; InputError when there is none."""
    found = shutil.which("git")
    if found is None:
        raise InputError(
            "git",
            "is not on PATH (repotune reads the history with the git command line)",
            "install git (e.g. apt-get install git) or add its directory to PATH",
        )
    return found


def _git(repo: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git -C repo args``, never searching the directories above ``repo`` for a repository."""
    path = Path(repo).absolute()
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(path.parent), "LC_ALL": "C"}
    return subprocess.run(
        [git_executable(), "-C", str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def git_output(repo: str | Path, *args: str) -> str:
    """The stripped output of a git command that must succeed in ``repo``."""
    completed = _git(repo, *args)
    if completed.returncode != 0:
        raise InputError(
            f"{SUBJECT} = '{repo}'",
            f"git {' '.join(args)} failed ({_first_line(completed.stderr)})",
            "check that the repository is intact (git fsck)",
        )
    return completed.stdout.strip()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def open_repository(repo: str | Path) -> Path:
    """Check a work tree, bare repository or shallow clone that has at least one commit."""
    path = Path(repo)
    where = f"{SUBJECT} = '{repo}'"
    if not path.exists():
        raise InputError(where, "path does not exist", "set repo to a git repository's path")
    if not path.is_dir():
        raise InputError(where, "is not a directory", "set repo to a git repository's path")
    opened = _git(path, "rev-parse", "--git-dir")
    if opened.returncode != 0:
        if "dubious ownership" in opened.stderr:
            raise InputError(
                where,
                "is owned by another user and git refuses to read it ('dubious ownership')",
                f"if you trust it, run: git config --global --add safe.directory {path.absolute()}",
            )
        raise InputError(
            where, "is not a git repository", "point repo at a git work tree or bare repository"
        )
    if _git(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").returncode != 0:
        raise InputError(
            where, "repository has no commits", "commit something first or choose another repo"
        )
    return path


def head_sha(repo: str | Path) -> str:
    """The full sha of HEAD."""
    open_repository(repo)
    return git_output(repo, "rev-parse", "--verify", "HEAD^{commit}")


def is_shallow(repo: str | Path) -> bool:
    """Whether the repository is a shallow clone (its oldest commits have missing parents)."""
    open_repository(repo)
    return git_output(repo, "rev-parse", "--is-shallow-repository") == "true"


def shallow_warning(repo: str | Path) -> str | None:
    """One line saying that a shallow clone holds only part of its history, else None."""
    if not is_shallow(repo):
        return None
    present = int(git_output(repo, "rev-list", "--count", "HEAD"))
    return (
        f"{SUBJECT} = '{repo}': is a shallow clone, so only {present} commit"
        f"{'s' if present != 1 else ''} of its history can be extracted; "
        "run 'git fetch --unshallow' in it to train on the whole history"
    )


def is_ancestor(repo: str | Path, ancestor: str, descendant: str) -> bool:
    """Whether commit ``ancestor`` exists in the repository and is reachable from ``descendant``."""
    open_repository(repo)
    return _git(repo, "merge-base", "--is-ancestor", ancestor, descendant).returncode == 0


def count_merges(repo: str | Path, head: str) -> int:
    """Merge commits reachable from ``head``."""
    return int(git_output(repo, "rev-list", "--count", "--merges", head))
