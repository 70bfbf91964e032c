"""Benchmark the snapshot stage against ``git archive`` of the same tree.

(a) ``git archive --format=tar <commit>`` to /dev/null: git reading and inflating every blob of
    the tree, the floor for getting a tree's files out of git;
(b) our blob reader alone (``git ls-tree`` + one streaming ``git cat-file --batch``);
(c) the whole snapshot: the reader, then the filters, near-duplicate MinHash, secret redaction
    and the Parquet writer.

By default the tree is real code: the installed ``transformers`` package committed once into a
scratch repository (thousands of Python files). Or name a repository and commit:

    .venv/bin/python -m benchmarks.snapshot
    .venv/bin/python -m benchmarks.snapshot --repo /path/to/repo --commit HEAD
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import transformers

from repotune.config import resolve_config
from repotune.snapshot.blobs import list_tree, read_blobs
from repotune.snapshot.stage import SnapshotSettings, snapshot_tree


def scratch_repository(source: Path, target: Path) -> Path:
    """``source`` copied into a new repository at ``target`` and committed once."""
    shutil.copytree(source, target / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    environment = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot source"]):
        subprocess.run(["git", "-C", str(target), *command], env=environment, check=True)
    return target


def timed(label: str, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"{label:<44} {seconds:8.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="an existing repository (default: scratch)")
    parser.add_argument("--commit", default="HEAD")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="repotune-bench-snapshot-") as scratch:
        repo = args.repo or scratch_repository(
            Path(transformers.__file__).parent, Path(scratch) / "repo"
        )
        tree = list_tree(repo, args.commit)
        megabytes = sum(entry.size for entry in tree.files) / 1e6
        print(f"tree: {len(tree.files)} files, {megabytes:.1f} MB, load {os.getloadavg()[0]:.2f}")

        def archive() -> None:
            with open(os.devnull, "wb") as sink:
                subprocess.run(
                    ["git", "-C", str(repo), "archive", "--format=tar", args.commit],
                    stdout=sink,
                    check=True,
                )

        def read_only() -> None:
            entries = list_tree(repo, args.commit).files
            for _ in read_blobs(repo, [entry.blob_sha for entry in entries]):
                pass

        settings = SnapshotSettings.from_config(resolve_config())
        output = Path(scratch) / "files.parquet"
        floor = timed("git archive --format=tar (floor)", archive)
        reader = timed("blob reader (ls-tree + cat-file --batch)", read_only)
        whole = timed(
            "snapshot (filters, MinHash, redaction, Parquet)",
            lambda: snapshot_tree(repo, args.commit, output, settings),
        )
        print(f"reader / git archive:   {reader / floor:.2f}x the time")
        print(
            f"snapshot / git archive: {whole / floor:.2f}x the time ({megabytes / whole:.1f} MB/s)"
        )


if __name__ == "__main__":
    main()
