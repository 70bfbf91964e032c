"""Stage ``curate``: ``results/commits.parquet`` to a filtered, redacted, time-split dataset.

Why it is shaped like this:

* Two streaming passes, so memory stays flat whatever the history length. Pass one reads the
  commits batch by batch, filters (:mod:`repotune.curate.filters`), redacts
  (:mod:`repotune.curate.redact`) and writes the survivors to a scratch Parquet file,
  keeping only their committer times. What grows with the history is ~30 bytes a commit
  (its time, split code and weight, and the duplicate filter's 8-byte key): about 40 MB at
  1.3 M commits (benchmarks/scale.py measures it).
  The split needs every time before any row can be placed (:mod:`repotune.curate.timesplit`); pass
  two then streams the scratch file into the three split files.
* Redaction runs on every text a tokenizer could see (subject, body, paths, patches) of every
  kept commit, before anything is written.
* Rows keep their input order within each split file (extraction order: parents first).
* Every output is written to a temporary name and renamed, and nothing depends on the clock,
  so the same input and settings give the same bytes.
"""

import json
import logging
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repotune.atomic import atomic_path, write_text
from repotune.curate.filters import COMMIT_FILTERS, CommitFilter, FilterSettings
from repotune.curate.redact import Redactor, RedactSettings
from repotune.curate.table import DATASET, SPLITS
from repotune.curate.timesplit import (
    TRAIN,
    SplitSettings,
    SplitSizes,
    assign_splits,
    recency_weights,
    split_sizes,
)
from repotune.errors import InputError
from repotune.extract.table import COMMITS
from repotune.progress import Progress

log = logging.getLogger(__name__)

BATCH_COMMITS = 1000
EXAMPLES = 5
META_SETTINGS = b"repotune.curate.settings"
META_SPLIT = b"repotune.split"
_MESSAGE_COLUMNS = ["sha", "parents", "is_merge", "author_name", "subject", "body", "files"]


@dataclass(frozen=True)
class CurateSettings:
    """The ``curate`` config section (defaults live in config/schema.yaml)."""

    filters: FilterSettings
    redact: RedactSettings
    split: SplitSettings
    recency_half_life_days: float | None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> "CurateSettings":
        filters, redact = filter_and_redact_settings(section)
        return cls(
            filters=filters,
            redact=redact,
            split=SplitSettings.from_config(section["split"]),
            recency_half_life_days=section["recency_half_life_days"],
        )


def filter_and_redact_settings(
    section: Mapping[str, Any],
) -> tuple[FilterSettings, RedactSettings]:
    """The ``curate`` section's file filters and redaction settings.

    The snapshot and the FIM questions show a model the repository's files outside this stage;
    reading the same two sections the same way keeps them dropping and redacting what curate
    drops and redacts.
    """
    return FilterSettings.from_config(section["filters"]), RedactSettings.from_config(
        section["redact"]
    )


@dataclass
class _Tally:
    """What each filter dropped, with the first few affected shas as examples.

    Commit filters count commits; ``generated_files`` counts files (and the commits it
    touched), since it removes files from commits that stay.
    """

    commits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMMIT_FILTERS, 0))
    generated_files: int = 0
    examples: dict[str, list[str]] = field(
        default_factory=lambda: {name: [] for name in COMMIT_FILTERS}
    )

    def drop(self, name: str, sha: str) -> None:
        self.commits[name] += 1
        self._example(name, sha)

    def drop_generated(self, sha: str, files: int) -> None:
        self.commits["generated_files"] += 1
        self.generated_files += files
        self._example("generated_files", sha)

    def _example(self, name: str, sha: str) -> None:
        if len(self.examples[name]) < EXAMPLES:
            self.examples[name].append(sha)

    def report(self, settings: FilterSettings) -> dict[str, dict[str, Any]]:
        enabled = asdict(settings)
        report = {}
        for name in COMMIT_FILTERS:
            entry: dict[str, Any] = {"enabled": bool(enabled.get(name, True))}
            if name == "generated_files":
                entry["dropped_files"] = self.generated_files
                entry["commits_touched"] = self.commits[name]
            else:
                entry["dropped_commits"] = self.commits[name]
            entry["example_shas"] = self.examples[name]
            report[name] = entry
        return report


def curate(
    commits: str | Path,
    outputs: Mapping[str, str | Path],
    report: str | Path,
    settings: CurateSettings,
) -> dict[str, Any]:
    """Curate ``commits`` into one Parquet file per split plus the ``report`` JSON.

    ``outputs`` maps each of train, validation and test to its path. Returns the report.
    Raises :class:`InputError` when the input is not a commits table or too few commits
    survive to split.
    """
    source = str(commits)
    parquet = _open_commits(commits)
    commit_filter = CommitFilter(settings.filters)
    redactor = Redactor(settings.redact)
    tally = _Tally()
    scratch_parent = Path(report).parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".curate-") as scratch:
        kept_path = Path(scratch) / "kept.parquet"
        times = _filter_and_redact(parquet, kept_path, commit_filter, redactor, tally)
        for name, entry in tally.report(settings.filters).items():
            log.info("filter %s: %s", name, {k: v for k, v in entry.items() if k != "enabled"})
        sizes = split_sizes(len(times), settings.split, source)
        codes = assign_splits(times, sizes)
        weights = recency_weights(times, codes, settings.recency_half_life_days)
        metadata = _provenance(parquet)
        metadata[META_SETTINGS] = json.dumps(asdict(settings), sort_keys=True).encode()
        _write_splits(kept_path, codes, weights, outputs, metadata)
    summary = _summary(source, parquet, tally, redactor, sizes, times, codes, weights, settings)
    write_text(report, json.dumps(summary, indent=2) + "\n")
    log.info(
        "curated %d of %d commits: train %d, validation %d, test %d",
        len(times),
        parquet.metadata.num_rows,
        sizes.train,
        sizes.validation,
        sizes.test,
    )
    return summary


def _open_commits(path: str | Path) -> pq.ParquetFile:
    """The commits table, checked against :data:`COMMITS` so a wrong file fails by name."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowInvalid) as error:
        raise InputError(
            str(path), f"cannot be read as Parquet ({error})", "rerun rule extract_commits"
        ) from None
    schema = parquet.schema_arrow
    wrong = [
        name
        for name in COMMITS.names
        if name not in schema.names or schema.field(name).type != COMMITS.field(name).type
    ]
    if wrong:
        raise InputError(
            str(path),
            f"is not a commits table (missing or mistyped: {', '.join(wrong)})",
            "point curate at results/commits.parquet as written by rule extract_commits",
        )
    return parquet


def _provenance(parquet: pq.ParquetFile) -> dict[bytes, bytes]:
    """The input's ``repotune.*`` metadata (HEAD, extraction settings), passed on."""
    metadata = parquet.schema_arrow.metadata or {}
    return {key: value for key, value in metadata.items() if key.startswith(b"repotune.")}


def _filter_and_redact(
    parquet: pq.ParquetFile,
    kept_path: Path,
    commit_filter: CommitFilter,
    redactor: Redactor,
    tally: _Tally,
) -> np.ndarray:
    """Pass one: write the surviving, redacted commits to ``kept_path``.

    Returns their committer times (seconds since the epoch), in input order.
    """
    times: list[np.ndarray] = []
    progress = Progress(log, "curate: filter and redact", parquet.metadata.num_rows)
    with pq.ParquetWriter(kept_path, COMMITS) as writer:
        for stored in parquet.iter_batches(batch_size=BATCH_COMMITS, columns=COMMITS.names):
            batch = stored.select(COMMITS.names)
            rows = batch.select(_MESSAGE_COLUMNS).to_pylist()
            kept: list[int] = []
            texts: dict[str, list[Any]] = {"subject": [], "body": [], "files": []}
            for index, row in enumerate(rows):
                files = _curate_commit(row, commit_filter, tally)
                if files is None:
                    continue
                kept.append(index)
                texts["subject"].append(redactor.redact(row["subject"]))
                texts["body"].append(redactor.redact(row["body"]))
                texts["files"].append([_redact_file(change, redactor) for change in files])
            if kept:
                writer.write_table(_kept_table(batch, kept, texts))
                times.append(_epoch_seconds(batch.column("committer_time"))[kept])
            progress.advance(len(rows), kept=len(kept))
    progress.finish()
    return np.concatenate(times) if times else np.empty(0, dtype=np.int64)


def _epoch_seconds(times: pa.Array) -> np.ndarray:
    """Whole seconds since the epoch, whatever the stored unit (git times are whole seconds)."""
    return times.cast(pa.timestamp("s", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()


def _curate_commit(
    row: dict[str, Any], commit_filter: CommitFilter, tally: _Tally
) -> list[dict[str, Any]] | None:
    """The commit's kept files, or None when a filter drops it (counted in ``tally``)."""
    verdict = commit_filter.message_verdict(row)
    if verdict is not None:
        tally.drop(verdict, row["sha"])
        return None
    files, dropped = commit_filter.split_files(row["files"])
    if dropped:
        tally.drop_generated(row["sha"], dropped)
    verdict = commit_filter.content_verdict(files)
    if verdict is None and commit_filter.is_duplicate(files):
        verdict = "duplicates"
    if verdict is not None:
        tally.drop(verdict, row["sha"])
        return None
    return files


def _redact_file(change: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    return {
        **change,
        "path": redactor.redact(change["path"]),
        "old_path": redactor.redact(change["old_path"]) if change["old_path"] else None,
        "patch": redactor.redact(change["patch"]) if change["patch"] else change["patch"],
    }


def _kept_table(batch: pa.RecordBatch, kept: list[int], texts: dict[str, list[Any]]) -> pa.Table:
    """The kept rows of ``batch`` with redacted texts and totals recomputed over kept files."""
    table = pa.Table.from_batches([batch.take(pa.array(kept, pa.int32()))])
    files = texts["files"]
    columns = {
        "subject": texts["subject"],
        "body": texts["body"],
        "files": files,
        "files_changed": [len(changes) for changes in files],
        "additions": [sum(c["additions"] or 0 for c in changes) for changes in files],
        "deletions": [sum(c["deletions"] or 0 for c in changes) for changes in files],
        "patch_bytes": [sum(c["patch_bytes"] for c in changes) for changes in files],
    }
    for name, values in columns.items():
        column = COMMITS.field(name)
        table = table.set_column(
            COMMITS.get_field_index(name), column, pa.array(values, column.type)
        )
    return table


def _write_splits(
    kept_path: Path,
    codes: np.ndarray,
    weights: np.ndarray,
    outputs: Mapping[str, str | Path],
    metadata: dict[bytes, bytes],
) -> None:
    """Pass two: stream the kept commits into one file per split, with split and weight."""
    with ExitStack() as stack:
        writers = {}
        for name in SPLITS:
            temporary = stack.enter_context(atomic_path(outputs[name]))
            schema = DATASET.with_metadata({**metadata, META_SPLIT: name.encode()})
            writers[name] = stack.enter_context(pq.ParquetWriter(temporary, schema))
        offset = 0
        progress = Progress(log, "curate: write splits", len(codes))
        for batch in pq.ParquetFile(kept_path, pre_buffer=False).iter_batches(
            batch_size=BATCH_COMMITS
        ):
            chunk = slice(offset, offset + batch.num_rows)
            offset += batch.num_rows
            names = np.array(SPLITS)[codes[chunk]]
            table = pa.Table.from_batches([batch]).append_column(
                DATASET.field("recency_weight"), pa.array(weights[chunk], pa.float64())
            )
            table = table.append_column(DATASET.field("split"), pa.array(names, pa.string()))
            for code, name in enumerate(SPLITS):
                mask = codes[chunk] == code
                if mask.any():
                    writers[name].write_table(table.filter(pa.array(mask)))
            progress.advance(batch.num_rows)
        progress.finish()


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(
    source: str,
    parquet: pq.ParquetFile,
    tally: _Tally,
    redactor: Redactor,
    sizes: SplitSizes,
    times: np.ndarray,
    codes: np.ndarray,
    weights: np.ndarray,
    settings: CurateSettings,
) -> dict[str, Any]:
    """curation.json: what went in, what each filter dropped, what was redacted, the split."""
    metadata = parquet.schema_arrow.metadata or {}
    head = metadata.get(b"repotune.head")
    splits = {}
    for code, name in enumerate(SPLITS):
        chosen = times[codes == code]
        splits[name] = {
            "commits": int(getattr(sizes, name)),
            "first_committer_time": _iso(chosen.min()) if len(chosen) else None,
            "last_committer_time": _iso(chosen.max()) if len(chosen) else None,
        }
    train = weights[codes == TRAIN]
    return {
        "input": {
            "path": source,
            "head": head.decode() if head else None,
            "commits": parquet.metadata.num_rows,
        },
        "kept_commits": len(times),
        "filters": tally.report(settings.filters),
        "redactions": dict(redactor.counts),
        "split": splits,
        "recency_weights": {
            "half_life_days": settings.recency_half_life_days,
            "train_min": round(float(train.min()), 6),
            "train_max": round(float(train.max()), 6),
            "train_mean": round(float(train.mean()), 6),
            "train_effective_commits": round(float(train.sum() ** 2 / (train**2).sum()), 3),
        },
        "settings": asdict(settings),
    }
