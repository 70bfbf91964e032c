"""``training_log.csv``: one row per logging interval, kept in the train state across resumes.

A resumed run drops the rows after its checkpoint (they are trained again), so an interrupted
run's log ends up equal to an uninterrupted one's. The adapter directory gets a copy.
"""

import csv
import logging
from pathlib import Path
from typing import Any

from repotune.atomic import atomic_path

log = logging.getLogger("repotune.train")
FILE = "training_log.csv"
FIELDS = (
    "step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "peak_memory_mb",
    "val_loss", "micro_batch", "accumulation",
)  # fmt: skip


def append(state_dir: Path, row: dict[str, Any]) -> None:
    """Add ``row`` (keys: :data:`FIELDS`) and echo it to the log."""
    path = state_dir / FILE
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    log.info(" ".join(f"{key}={value}" for key, value in row.items() if value != ""))


def trim(state_dir: Path, step: int) -> None:
    """Drop rows after ``step``, the checkpoint we resume from."""
    path = state_dir / FILE
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def rows(state_dir: Path) -> list[dict[str, str]]:
    """Every row, as strings."""
    with open(state_dir / FILE, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def last_train_loss(state_dir: Path) -> float | None:
    """The training loss of the last row."""
    logged = rows(state_dir)
    return float(logged[-1]["loss"]) if logged else None


def last_val_loss(state_dir: Path) -> float | None:
    """The last validation loss logged."""
    values = [float(row["val_loss"]) for row in rows(state_dir) if row["val_loss"]]
    return values[-1] if values else None
