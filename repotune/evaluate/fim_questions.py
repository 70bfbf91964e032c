"""Rule ``fim_questions``: the curated test split -> ``results/fim/questions.parquet``.

The fill-in-the-middle questions (:mod:`repotune.evaluate.fim_tasks`) depend on the repository,
the test split and the seed, never on a model, so the workflow builds them once and every
model's evaluation reads the same file: the same questions for base and adapted and for every
configured model. Post-images come from the repository (``git cat-file``), which the evaluate
jobs then need not reach. ``fim_questions.json`` says how many were asked and why the other
test commits gave none.
"""

import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from repotune.atomic import atomic_path, write_text
from repotune.curate.filters import CommitFilter, FilterSettings
from repotune.curate.redact import Redactor, RedactSettings
from repotune.curate.stage import filter_and_redact_settings
from repotune.errors import InputError
from repotune.evaluate.fim_tasks import SKIP_REASONS, FimTask, fim_tasks

log = logging.getLogger(__name__)
QUESTIONS = pa.schema(
    [(name, pa.string()) for name in ("sha", "path", "language", "prefix", "middle", "suffix")]
)
_BATCH_COMMITS = 512


@dataclass(frozen=True)
class FimQuestionSettings:
    """What shapes the questions: sample size and seed (``evaluate``), the largest file asked
    about (``snapshot.max_file_bytes``), the curate filters and redaction."""

    samples: int
    seed: int
    max_file_bytes: int
    filters: FilterSettings
    redact: RedactSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FimQuestionSettings":
        """From the rule's params: ``samples``, ``seed``, ``max_file_bytes`` and ``curate``'s
        ``filters`` and ``redact`` sections."""
        filters, redact = filter_and_redact_settings(config["curate"])
        return cls(
            samples=config["samples"],
            seed=config["seed"],
            max_file_bytes=config["max_file_bytes"],
            filters=filters,
            redact=redact,
        )


def _commits(path: str | Path) -> Iterator[dict[str, Any]]:
    """The test split's shas and file changes, a batch at a time (no message text)."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"test commits '{path}'", f"cannot be read ({error})", "rerun the curate stage"
        ) from None
    for batch in parquet.iter_batches(_BATCH_COMMITS, columns=["sha", "files"]):
        yield from batch.to_pylist()


def build_fim_questions(
    repo: str | Path,
    test_commits: str | Path,
    output: str | Path,
    report: str | Path,
    settings: FimQuestionSettings,
) -> dict[str, Any]:
    """Write the questions and the report; return the report."""
    redactor = Redactor(settings.redact)
    draw = fim_tasks(
        repo,
        _commits(test_commits),
        CommitFilter(settings.filters),
        redactor,
        settings.seed,
        settings.max_file_bytes,
        settings.samples,
    )
    table = pa.Table.from_pylist([asdict(task) for task in draw.tasks], schema=QUESTIONS)
    with atomic_path(output) as temporary:
        pq.write_table(table, temporary)
    languages = Counter(task.language for task in draw.tasks)
    result = {
        "asked": len(draw.tasks),
        "samples": settings.samples,
        "test_commits": sum(draw.skipped.values()) + len(draw.tasks),
        "skipped": {reason: draw.skipped.get(reason, 0) for reason in SKIP_REASONS},
        "languages": dict(sorted(languages.items())),
        "redactions": {kind: n for kind, n in redactor.counts.items() if n},
    }
    write_text(report, json.dumps(result, indent=2) + "\n")
    log.info("fim questions: %s", result)
    return result


def read_fim_questions(path: str | Path) -> list[FimTask]:
    """The questions the rule wrote, in its order."""
    try:
        rows = pq.read_table(path, schema=QUESTIONS).to_pylist()
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"FIM questions '{path}'", f"cannot be read ({error})", "rerun the fim_questions rule"
        ) from None
    return [FimTask(**row) for row in rows]
