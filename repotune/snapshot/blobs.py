"""A tree's files, read in one streaming ``git cat-file --batch`` pass.

``git ls-tree -r -l -z`` lists the tree (mode, object type, blob id, size, path); then one
``git cat-file --batch`` process is fed every blob id on its stdin by a writer thread while this
process reads the answers from its stdout, so git does the object lookup and inflation and the
pipe never holds more than one blob at a time. Spawning ``git show`` per file would cost a
process each; ``git archive`` streams the same bytes but as a tar with no blob ids.
"""

import contextlib
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from repotune.errors import InputError

_REGULAR_FILES = ("100644", "100755")  # not symlinks (120000), not submodules (160000)


@dataclass(frozen=True)
class TreeEntry:
    """One regular file of a tree."""

    path: str
    blob_sha: str
    size: int


@dataclass(frozen=True)
class Tree:
    """A tree's regular files, sorted by path, and what was not a regular file."""

    files: list[TreeEntry]
    symlinks: int
    submodules: int


def _git(repo: Path, *args: str) -> bytes:
    completed = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InputError(
            f"repository {repo}",
            f"git {args[0]} failed ({message[-1] if message else completed.returncode})",
            "check that the path is a git repository and the commit exists",
        )
    return completed.stdout


def list_tree(repo: str | Path, commit: str) -> Tree:
    """Every regular file of ``commit``'s tree, recursively, with its blob id and size."""
    output = _git(Path(repo), "ls-tree", "-r", "-l", "-z", "--full-tree", commit)
    files: list[TreeEntry] = []
    symlinks = submodules = 0
    for record in output.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        if kind == "commit":
            submodules += 1
        elif mode in _REGULAR_FILES:
            path = raw_path.decode("utf-8", "surrogateescape")
            files.append(TreeEntry(path, sha, int(size)))
        else:
            symlinks += 1
    files.sort(key=lambda entry: entry.path)
    return Tree(files, symlinks, submodules)


def _feed(stdin: IO[bytes], shas: Iterable[str]) -> None:
    """Write every id to git's stdin; a reader that stopped early closes the pipe: fine."""
    with contextlib.suppress(BrokenPipeError):
        try:
            for sha in shas:
                stdin.write(sha.encode() + b"\n")
        finally:
            stdin.close()


def read_blobs(repo: str | Path, shas: list[str]) -> Iterator[tuple[str, bytes]]:
    """``(blob id, content)`` for each of ``shas``, in order, from one ``git cat-file`` process."""
    process = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    writer = threading.Thread(target=_feed, args=(process.stdin, shas), daemon=True)
    writer.start()
    try:
        for expected in shas:
            header = process.stdout.readline()
            parts = header.split()
            if len(parts) != 3 or parts[1] != b"blob":
                raise InputError(
                    f"repository {repo}",
                    f"git cat-file could not read blob {expected} ({header.decode().strip()})",
                    "run `git fsck` on the repository",
                )
            content = process.stdout.read(int(parts[2]))
            process.stdout.read(1)  # the newline after each object
            yield parts[0].decode(), content
    finally:
        process.stdout.close()
        process.kill()
        process.wait()
        writer.join()
