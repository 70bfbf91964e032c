"""Stage ``extract_commits``: a repository's history to ``results/commits.parquet``.

Why it is shaped like this:

* git's own diffing is the floor, so the history is cut into slices of consecutive commits
  (``git rev-list``) and each slice is one streaming ``git log --stdin`` process whose output is
  parsed as it arrives; slices run on all of the rule's threads and come back in order.
* Memory stays flat: a slice becomes one Arrow record batch, written as one Parquet row group.
* Incremental: the previous extraction is kept in a cache file that is not a Snakemake output
  (Snakemake deletes outputs before a job runs). When its HEAD is an ancestor of the new HEAD
  and its rows are exactly the first rows of a fresh extraction, only the new commits are read
  from git and appended, so the result equals a full extraction by construction.
* Every file is written to a temporary name and renamed, so an interrupted run leaves nothing
  that a rerun would trust.
"""

import json
import logging
import os
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import accumulate, islice
from multiprocessing import get_context
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repotune.atomic import atomic_path, write_text
from repotune.errors import InputError
from repotune.extract import table as commit_table
from repotune.extract.gitlog import DIFF_FORMAT, FORMAT, Commit, email_sha256, iter_commits
from repotune.extract.repository import (
    count_merges,
    git_output,
    is_ancestor,
    is_shallow,
    open_repository,
    shallow_warning,
)
from repotune.progress import Progress

log = logging.getLogger(__name__)

META_HEAD = b"repotune.head"
META_SETTINGS = b"repotune.settings"
META_VERSION = b"repotune.schema_version"


@dataclass(frozen=True)
class ExtractSettings:
    """The ``extract`` config section (defaults live in config/schema.yaml)."""

    include_merges: bool
    detect_renames: bool
    max_patch_bytes: int
    store_author_email: bool
    workers: int
    row_group_commits: int

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "ExtractSettings":
        return cls(**section)

    def fingerprint(self) -> str:
        """What changes the rows: a cache written with other settings is not reused."""
        relevant = asdict(self)
        relevant.pop("workers")
        relevant.pop("row_group_commits")
        return json.dumps(relevant, sort_keys=True)


def git_log_command(repo: str | Path, settings: ExtractSettings) -> list[str]:
    """The ``git log`` that prints the commits whose shas arrive on its stdin, in that order.

    User config that would change the output (external diff tools, text conversion, colour,
    prefixes, path quoting) is switched off so the parser sees one stable format.
    """
    renames = ["-M", "-C"] if settings.detect_renames else ["--no-renames"]
    return [
        "git",
        "-C",
        str(repo),
        "-c",
        "core.quotePath=false",
        "-c",
        "diff.noprefix=false",
        "-c",
        "log.showSignature=false",
        "log",
        "--no-walk=unsorted",
        "--stdin",
        *DIFF_FORMAT,
        "--diff-merges=first-parent",
        "--date=raw",
        "--encoding=UTF-8",
        f"--format={FORMAT}",
        *renames,
    ]


def rev_list(repo: str | Path, head: str, settings: ExtractSettings) -> Iterator[str]:
    """Stream the shas to extract, oldest first: no commit before its parents."""
    merges = [] if settings.include_merges else ["--no-merges"]
    command = ["git", "-C", str(repo), "rev-list", "--reverse", "--date-order", *merges, head]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        for line in process.stdout:
            yield line.decode("ascii").strip()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)


def read_commits(
    repo: str | Path, shas: Iterable[str], settings: ExtractSettings
) -> Iterator[Commit]:
    """Run one ``git log`` over ``shas`` and yield its commits as they stream out."""
    with subprocess.Popen(
        git_log_command(repo, settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"},
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("".join(f"{sha}\n" for sha in shas).encode("ascii"))
        process.stdin.close()
        yield from iter_commits(process.stdout, settings.max_patch_bytes)
    if process.returncode:
        raise RuntimeError(f"git log exited with status {process.returncode} in {repo}")


def commits_to_batch(commits: list[Commit], store_email: bool) -> pa.RecordBatch:
    """Build one record batch column by column: ``zip(*tuples)`` beats row dictionaries."""
    changes = [change for commit in commits for change in commit.files]
    offsets = np.fromiter(accumulate((len(c.files) for c in commits), initial=0), np.int32)
    file_type = commit_table.FILE_CHANGE
    file_columns = zip(*changes, strict=True) if changes else ([] for _ in file_type)
    children = [
        pa.array(values, type=field.type)
        for values, field in zip(file_columns, file_type, strict=True)
    ]
    files = pa.ListArray.from_arrays(
        pa.array(offsets), pa.StructArray.from_arrays(children, fields=list(file_type))
    )
    by_name = dict(zip(file_type.names, children, strict=True))
    c = Commit(*zip(*commits, strict=True))
    milliseconds = np.int64(1000)
    columns = [
        c.sha,
        c.parents,
        [len(parents) > 1 for parents in c.parents],
        c.author_name,
        [email_sha256(email) for email in c.author_email],
        c.author_email if store_email else [None] * len(commits),
        np.array(c.author_time, np.int64) * milliseconds,
        c.author_offset,
        c.committer_name,
        np.array(c.committer_time, np.int64) * milliseconds,
        c.committer_offset,
        c.encoding,
        c.subject,
        c.body,
        files,
        np.diff(offsets),
        _sum_per_commit(by_name["additions"], offsets),
        _sum_per_commit(by_name["deletions"], offsets),
        _sum_per_commit(by_name["patch_bytes"], offsets),
    ]
    arrays = [
        value if isinstance(value, pa.Array) else pa.array(value, type=field.type)
        for field, value in zip(commit_table.COMMITS, columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=commit_table.COMMITS)


def _sum_per_commit(values: pa.Array, offsets: np.ndarray) -> np.ndarray:
    """Per-commit totals of a flattened per-file column (nulls count as 0)."""
    running = np.concatenate([[0], np.cumsum(values.fill_null(0).to_numpy(), dtype=np.int64)])
    return running[offsets[1:]] - running[offsets[:-1]]


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of ``size`` items (the last may be shorter); lazy, like 3.12's."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _extract_slice(job: tuple[str, list[str], ExtractSettings]) -> pa.RecordBatch:
    repo, shas, settings = job
    commits = list(read_commits(repo, shas, settings))
    if [c.sha for c in commits] != shas:
        raise RuntimeError(f"git log returned other commits than asked for in {repo}")
    return commits_to_batch(commits, settings.store_author_email)


def extract_batches(
    repo: str | Path, shas: Iterable[str], settings: ExtractSettings, workers: int
) -> Iterator[pa.RecordBatch]:
    """Batches of ``row_group_commits`` commits, in history order, from ``workers`` processes.

    At most ``2 * workers`` slices are in flight: ``Pool.imap`` would read every sha and queue
    every slice up front, and hold finished batches the writer has not taken yet, so memory
    would grow with the history.
    """
    size = settings.row_group_commits
    jobs = ((str(repo), chunk, settings) for chunk in batched(shas, size))
    if workers <= 1:
        yield from map(_extract_slice, jobs)
        return
    with get_context("fork").Pool(workers) as pool:
        pending: deque[AsyncResult] = deque()
        for job in jobs:
            pending.append(pool.apply_async(_extract_slice, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _cached_prefix(
    cache: Path, repo: str | Path, head: str, settings: ExtractSettings
) -> list[str]:
    """The shas of a reusable previous extraction, or [] when it must be redone."""
    if not cache.exists():
        return []
    try:
        parquet = pq.ParquetFile(cache)
    except (OSError, pa.ArrowInvalid):
        log.warning("ignoring unreadable cache %s", cache)
        return []
    meta = parquet.schema_arrow.metadata or {}
    if meta.get(META_VERSION, b"").decode() != commit_table.SCHEMA_VERSION:
        return []
    if meta.get(META_SETTINGS, b"").decode() != settings.fingerprint():
        log.info("extraction settings changed: full extraction")
        return []
    old_head = meta.get(META_HEAD, b"").decode()
    if not old_head or not is_ancestor(repo, old_head, head):
        log.info("cached HEAD %s is not an ancestor of %s: full extraction", old_head[:12], head)
        return []
    return parquet.read(columns=["sha"]).column("sha").to_pylist()


def _new_shas(all_shas: Iterator[str], prefix: list[str]) -> Iterator[str] | None:
    """The shas after ``prefix`` when ``prefix`` is exactly how the history starts, else None."""
    for expected in prefix:
        if next(all_shas, None) != expected:
            return None
    return all_shas


def extract_to_parquet(
    repo: str | Path,
    head: str,
    output: str | Path,
    stats_path: str | Path,
    cache: str | Path,
    settings: ExtractSettings,
    threads: int = 1,
) -> dict[str, Any]:
    """Extract the history reachable from ``head`` to ``output``; return the stats written."""
    started = time.perf_counter()
    open_repository(repo)
    warning = shallow_warning(repo)
    if warning:
        log.warning("%s", warning)
    cache = Path(cache)
    workers = settings.workers or max(threads, 1)
    prefix = _cached_prefix(cache, repo, head, settings)
    new = _new_shas(rev_list(repo, head, settings), prefix) if prefix else None
    if new is None:
        prefix, new = [], rev_list(repo, head, settings)
    log.info("extracting %s at %s with %d worker(s)", repo, head, workers)
    schema = commit_table.COMMITS.with_metadata(
        {
            META_HEAD: head.encode(),
            META_SETTINGS: settings.fingerprint().encode(),
            META_VERSION: commit_table.SCHEMA_VERSION.encode(),
        }
    )
    counts = {"extracted": 0, "patch_bytes": 0, "truncated": 0}
    with atomic_path(cache) as temporary:
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            if prefix:
                previous = pq.ParquetFile(cache)
                for index in range(previous.num_row_groups):
                    writer.write_table(previous.read_row_group(index).replace_schema_metadata())
            progress = Progress(log, "extract", _count_commits(repo, head, settings) - len(prefix))
            for batch in extract_batches(repo, new, settings, workers):
                writer.write_batch(batch)
                _count(batch, counts)
                progress.advance(batch.num_rows)
            progress.finish()
        total = pq.ParquetFile(temporary).metadata.num_rows
    if total == 0:
        raise _no_commits_error(repo)
    _publish(cache, Path(output))
    wall = time.perf_counter() - started
    stats = {
        "commits": total,
        "commits_extracted": counts["extracted"],
        "incremental": bool(prefix),
        "merges_skipped": 0 if settings.include_merges else count_merges(repo, head),
        "patch_bytes": counts["patch_bytes"],
        "patches_truncated": counts["truncated"],
        "wall_seconds": round(wall, 3),
        "commits_per_second": round(counts["extracted"] / wall, 1) if wall else None,
        "head": head,
        "shallow": is_shallow(repo),
        "workers": workers,
    }
    write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    log.info("done: %s", stats)
    return stats


def _count(batch: pa.RecordBatch, counts: dict[str, int]) -> None:
    counts["extracted"] += batch.num_rows
    counts["patch_bytes"] += pc.sum(batch.column("patch_bytes")).as_py() or 0
    flags = pc.list_flatten(batch.column("files")).field("patch_truncated")
    counts["truncated"] += pc.sum(flags.cast(pa.int64())).as_py() or 0


def _count_commits(repo: str | Path, head: str, settings: ExtractSettings) -> int:
    """Commits to extract from ``head``: the total the progress estimate needs (one cheap
    walk of the commit graph, no diffs)."""
    merges = [] if settings.include_merges else ["--no-merges"]
    return int(git_output(repo, "rev-list", "--count", *merges, head))


def _no_commits_error(repo: str | Path) -> InputError:
    return InputError(
        f"config 'repo' = '{repo}'",
        "history has only merge commits",
        "set extract.include_merges: true",
    )


def _publish(cache: Path, output: Path) -> None:
    """Make ``output`` a hard link to the cache file (a copy where links are impossible)."""
    with atomic_path(output) as temporary:
        try:
            os.link(cache, temporary)
        except OSError:
            shutil.copyfile(cache, temporary)
