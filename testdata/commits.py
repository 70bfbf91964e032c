"""Real commits.parquet files for the curate tests, written against ``commit_table.COMMITS``.

Rows are built by hand rather than by extraction so each test states exactly the history it
needs (a bot author, a cherry-pick, a planted secret) and nothing else.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repotune.config import resolve_config
from repotune.curate.stage import CurateSettings, curate
from repotune.extract.table import COMMITS, SCHEMA_VERSION

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def sha(seed: object) -> str:
    """A deterministic 40-hex sha for a fixture commit."""
    return hashlib.sha1(str(seed).encode()).hexdigest()


def change(
    path: str = "src/app.py",
    patch: str | None = "@@ -1,2 +1,3 @@\n def main():\n+    return run()\n",
    *,
    change_type: str = "M",
    old_path: str | None = None,
    is_binary: bool = False,
    similarity: int | None = None,
) -> dict[str, Any]:
    """One ``files`` entry; lines are counted from the patch like git does."""
    lines = (patch or "").splitlines()
    binary = is_binary or patch is None
    return {
        "path": path,
        "old_path": old_path,
        "change_type": change_type,
        "old_mode": None if change_type == "A" else "100644",
        "new_mode": None if change_type == "D" else "100644",
        "similarity": similarity,
        "additions": None if binary else sum(line.startswith("+") for line in lines),
        "deletions": None if binary else sum(line.startswith("-") for line in lines),
        "is_binary": binary,
        "is_submodule": False,
        "patch": None if binary else patch,
        "patch_bytes": 0 if binary else len(patch.encode()),
        "patch_truncated": False,
    }


def commit_row(
    full_sha: str,
    subject: str,
    files: list[dict[str, Any]],
    *,
    body: str = "",
    author: str = "Ada Lovelace",
    when: datetime = EPOCH,
) -> dict[str, Any]:
    """A root commit's row with every ``COMMITS`` column; the totals are summed from files."""
    return {
        "sha": full_sha,
        "parents": [],
        "is_merge": False,
        "author_name": author,
        "author_email_sha256": hashlib.sha256(b"ada@example.org").hexdigest(),
        "author_email": None,
        "author_time": when,
        "author_utc_offset_minutes": 60,
        "committer_name": author,
        "committer_time": when,
        "committer_utc_offset_minutes": 60,
        "encoding": None,
        "subject": subject,
        "body": body,
        "files": files,
        "files_changed": len(files),
        "additions": sum(f["additions"] or 0 for f in files),
        "deletions": sum(f["deletions"] or 0 for f in files),
        "patch_bytes": sum(f["patch_bytes"] for f in files),
    }


class History:
    """A hand-built history: :meth:`add` appends one commit row, a day after the previous."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        subject: str = "Add the request parser",
        body: str = "",
        *,
        files: list[dict[str, Any]] | None = None,
        author: str = "Ada Lovelace",
        day: float | None = None,
        parents: int = 1,
    ) -> dict[str, Any]:
        """Append a commit; ``day`` is days after 2024-01-01 (default: its position)."""
        number = len(self.rows) + 1
        when = EPOCH + timedelta(days=number if day is None else day)
        if files is None:
            files = [change(patch=f"@@ -1,2 +1,3 @@\n def main():\n+    return run({number})\n")]
        parent_shas = [sha(f"parent-{number}-{i}") for i in range(parents)]
        row = commit_row(sha(number), subject, files, body=body, author=author, when=when)
        row.update(parents=parent_shas, is_merge=parents > 1)
        self.rows.append(row)
        return row


def write_commits(path: Path, rows: list[dict[str, Any]], row_group: int = 1000) -> Path:
    """Write ``rows`` as a commits table with extraction's file metadata."""
    metadata = {
        b"repotune.head": rows[-1]["sha"].encode() if rows else b"",
        b"repotune.settings": json.dumps({"fixture": True}).encode(),
        b"repotune.schema_version": SCHEMA_VERSION.encode(),
    }
    table = pa.Table.from_pylist(rows, schema=COMMITS.with_metadata(metadata))
    pq.write_table(table, path, row_group_size=row_group)
    return path


def settings(**sections: dict[str, Any]) -> CurateSettings:
    """Curate settings as a rule would get them: the overrides plus every schema default."""
    return CurateSettings.from_config(resolve_config({"curate": sections})["curate"])


def run_curate(
    tmp_path: Path, rows: list[dict[str, Any]], **sections: dict[str, Any]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Curate ``rows``; returns the rows of each split file and curation.json."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = write_commits(tmp_path / "commits.parquet", rows)
    out = tmp_path / "dataset"
    outputs = {name: out / f"{name}.parquet" for name in ("train", "validation", "test")}
    curate(source, outputs, out / "curation.json", settings(**sections))
    splits = {name: pq.read_table(path).to_pylist() for name, path in outputs.items()}
    return splits, json.loads((out / "curation.json").read_text())


def all_rows(splits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for name in ("train", "validation", "test") for row in splits[name]]
