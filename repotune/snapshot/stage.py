"""Stage ``snapshot``: the files of the train cutoff's tree -> ``results/snapshot/files.parquet``.

Why it is shaped like this:

* **The cutoff is the newest training commit** (by committer time, from the curated train
  split), so the snapshot holds exactly the code a model could have seen before the validation
  and test periods began: evaluation on future commits stays honest.
* **The curate stage's rules, applied to files**: generated, vendored and lock files (the same
  ``curate.filters.generated_globs``), binary files (a NUL byte in the first 8,000 bytes, git's
  own test), files over ``snapshot.max_file_bytes``, exact duplicates (the same blob at two
  paths) and near-duplicates (:mod:`repotune.snapshot.neardup`); each counted with examples.
  Contents and paths then go through the same :class:`repotune.curate.redact.Redactor` as the
  commits, so a secret committed in a file is as invisible here as in a diff.
* **Streaming**: blobs come from one ``git cat-file --batch`` process
  (:mod:`repotune.snapshot.blobs`) and rows go to Parquet in batches, so memory is bounded by
  the largest file kept, not by the tree.
"""

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repotune.atomic import atomic_path, write_text
from repotune.curate.filters import CommitFilter, FilterSettings
from repotune.curate.redact import Redactor, RedactSettings
from repotune.curate.stage import filter_and_redact_settings
from repotune.errors import InputError
from repotune.snapshot.blobs import list_tree, read_blobs
from repotune.snapshot.languages import language
from repotune.snapshot.neardup import NearDuplicates
from repotune.snapshot.table import META_CUTOFF, SNAPSHOT

log = logging.getLogger(__name__)
FILE_FILTERS = ("generated", "oversized", "exact_duplicates", "binary", "near_duplicates")
EXAMPLES = 5
_BATCH_FILES = 256
_BINARY_PROBE = 8000


@dataclass(frozen=True)
class SnapshotSettings:
    """The ``snapshot`` config section plus the curate filters and redaction it reuses."""

    max_file_bytes: int
    near_duplicates: bool
    near_duplicate_threshold: float
    filters: FilterSettings
    redact: RedactSettings

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SnapshotSettings":
        section = config["snapshot"]
        filters, redact = filter_and_redact_settings(config["curate"])
        return cls(
            max_file_bytes=section["max_file_bytes"],
            near_duplicates=section["near_duplicates"],
            near_duplicate_threshold=section["near_duplicate_threshold"],
            filters=filters,
            redact=redact,
        )


def cutoff_commit(train: str | Path) -> tuple[str, str]:
    """``(sha, committer time ISO)`` of the newest commit of the curated train split."""
    table = pq.read_table(train, columns=["sha", "committer_time"])
    if table.num_rows == 0:
        raise InputError(
            str(train),
            "the train split has no commits",
            "use a longer history or smaller test/validation sizes",
        )
    times = table.column("committer_time").to_pylist()
    newest = max(range(len(times)), key=lambda row: (times[row], row))
    return table.column("sha")[newest].as_py(), times[newest].isoformat()


class _Counts:
    """Dropped files per filter, with the first few paths of each as examples."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = dict.fromkeys(FILE_FILTERS, 0)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def drop(self, reason: str, path: str) -> None:
        self.dropped[reason] += 1
        if len(self.examples[reason]) < EXAMPLES:
            self.examples[reason].append(path)

    def report(self) -> dict[str, Any]:
        return {
            name: {"files": self.dropped[name], "examples": self.examples.get(name, [])}
            for name in FILE_FILTERS
        }


def snapshot_tree(
    repo: str | Path, commit: str, output: str | Path, settings: SnapshotSettings
) -> dict[str, Any]:
    """Write the kept, redacted files of ``commit``'s tree to ``output``; return the report."""
    started = time.monotonic()
    tree = list_tree(repo, commit)
    counts = _Counts()
    generated = CommitFilter(settings.filters)
    redactor = Redactor(settings.redact)
    near = NearDuplicates(settings.near_duplicate_threshold) if settings.near_duplicates else None
    candidates = []
    seen_blobs: set[str] = set()
    for entry in tree.files:
        if settings.filters.generated_files and generated.is_generated(entry.path):
            counts.drop("generated", entry.path)
        elif entry.size > settings.max_file_bytes:
            counts.drop("oversized", entry.path)
        elif entry.blob_sha in seen_blobs:
            counts.drop("exact_duplicates", entry.path)
        else:
            seen_blobs.add(entry.blob_sha)
            candidates.append(entry)
    kept = kept_bytes = 0
    batch: dict[str, list[Any]] = {name: [] for name in SNAPSHOT.names}
    metadata = {META_CUTOFF: commit.encode()}
    with (
        atomic_path(output) as temporary,
        pq.ParquetWriter(temporary, SNAPSHOT.with_metadata(metadata)) as writer,
    ):
        blobs = read_blobs(repo, [entry.blob_sha for entry in candidates])
        for entry, (_, content) in zip(candidates, blobs, strict=True):
            if b"\0" in content[:_BINARY_PROBE]:
                counts.drop("binary", entry.path)
                continue
            text = content.decode("utf-8", errors="replace")
            if near is not None and near.is_duplicate(text):
                counts.drop("near_duplicates", entry.path)
                continue
            for name, value in (
                ("path", redactor.redact(entry.path)),
                ("language", language(entry.path)),
                ("size", entry.size),
                ("content", redactor.redact(text)),
                ("blob_sha", entry.blob_sha),
            ):
                batch[name].append(value)
            kept += 1
            kept_bytes += entry.size
            if len(batch["path"]) >= _BATCH_FILES:
                writer.write_table(pa.table(batch, schema=writer.schema))
                batch = {name: [] for name in SNAPSHOT.names}
                log.info("snapshot: %d of %d files read", kept, len(candidates))
        writer.write_table(pa.table(batch, schema=writer.schema))
    seconds = time.monotonic() - started
    log.info(
        "snapshot: kept %d of %d files (%.1f MB) in %.1f s",
        kept,
        len(tree.files),
        kept_bytes / 1e6,
        seconds,
    )
    return {
        "files_in_tree": len(tree.files),
        "not_regular_files": {"symlinks": tree.symlinks, "submodules": tree.submodules},
        "kept_files": kept,
        "kept_bytes": kept_bytes,
        "filters": counts.report(),
        "redactions": dict(sorted(redactor.counts.items())),
    }


def snapshot(
    repo: str | Path,
    train: str | Path,
    output: str | Path,
    report: str | Path,
    settings: SnapshotSettings,
) -> None:
    """The stage: cutoff from the train split, the tree's files to Parquet, the report."""
    commit, committed = cutoff_commit(train)
    log.info("snapshot of %s at the train cutoff %s (%s)", repo, commit, committed)
    result = snapshot_tree(repo, commit, output, settings)
    result = {"cutoff": {"sha": commit, "committer_time": committed}, **result}
    write_text(report, json.dumps(result, indent=2) + "\n")
