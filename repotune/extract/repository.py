"""Checks and facts about the data repository.

The workflow resolves the repository's HEAD when it parses the Snakefile and puts the sha in
the extraction rule's params, so Snakemake's params trigger reruns extraction exactly when
HEAD moves. A bad path therefore has to fail here, early, in one readable line.
"""

from pathlib import Path

import git

from repotune.errors import InputError

SUBJECT = "config 'repo'"


def open_repository(repo: str | Path) -> git.Repo:
    """Open a work tree, bare repository or shallow clone that has at least one commit."""
    path = Path(repo)
    where = f"{SUBJECT} = '{repo}'"
    if not path.exists():
        raise InputError(where, "path does not exist", "set repo to a git repository's path")
    if not path.is_dir():
        raise InputError(where, "is not a directory", "set repo to a git repository's path")
    try:
        handle = git.Repo(path, search_parent_directories=False)
    except git.InvalidGitRepositoryError:
        raise InputError(
            where, "is not a git repository", "point repo at a git work tree or bare repository"
        ) from None
    try:
        handle.head.commit  # noqa: B018  (raises when HEAD points at an unborn branch)
    except ValueError:
        raise InputError(
            where, "repository has no commits", "commit something first or choose another repo"
        ) from None
    return handle


def head_sha(repo: str | Path) -> str:
    """The full sha of HEAD."""
    return open_repository(repo).head.commit.hexsha


def is_shallow(repo: str | Path) -> bool:
    """Whether the repository is a shallow clone (its oldest commits have missing parents)."""
    return open_repository(repo).git.rev_parse("--is-shallow-repository") == "true"


def is_ancestor(repo: str | Path, ancestor: str, descendant: str) -> bool:
    """Whether commit ``ancestor`` exists in the repository and is reachable from ``descendant``."""
    handle = open_repository(repo)
    try:
        return handle.is_ancestor(ancestor, descendant)
    except git.GitCommandError:
        return False
