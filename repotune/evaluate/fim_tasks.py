"""Fill-in-the-middle questions from the held-out future: complete a change where it was made.

For each sampled test commit, one run of added lines in one hunk is masked in the file *after*
the commit (its post-image, read from the repository): the model gets the code before the run
(prefix) and after it (suffix) and is asked for the run (middle), as an editor would ask it at
that spot. Because test commits are newer than anything trained on, this measures completion
on code the model has not seen, in the repository's own style. Scores: exact match and edit
similarity of the middle (:mod:`repotune.evaluate.metrics`) and, for Python files, whether the
file with the generated middle still parses (``ast.parse``), as in SAFIM's syntax checks.

Which run a commit is asked for is a hash of the seed and its sha, as for the code-change task.
Prefix, middle and suffix pass through the same redaction as training data.
"""

import ast
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.curate.filters import CommitFilter
from repotune.curate.redact import Redactor
from repotune.evaluate.metrics import edit_similarity, exact_match
from repotune.snapshot.blobs import read_blobs
from repotune.snapshot.languages import language

FIM_METRICS = ("exact_match", "edit_similarity", "parses")
_HUNK_HEADER = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_EDITABLE = ("A", "M", "R", "C")


@dataclass(frozen=True)
class FimTask:
    """One masked run of added lines in a test commit's post-image."""

    sha: str
    path: str
    language: str
    prefix: str
    middle: str
    suffix: str


def added_runs(patch: str) -> list[tuple[int, int]]:
    """Post-image line ranges ``[first, last)`` (1-based) of each run of ``+`` lines."""
    runs: list[tuple[int, int]] = []
    line = 0
    start: int | None = None
    for text in patch.splitlines():
        header = _HUNK_HEADER.match(text)
        if header:
            if start is not None:
                runs.append((start, line))
                start = None
            line = int(header.group(1))
            continue
        if text.startswith("+"):
            start = line if start is None else start
            line += 1
            continue
        if start is not None:
            runs.append((start, line))
            start = None
        if text.startswith(" "):
            line += 1
    if start is not None:
        runs.append((start, line))
    return runs


def _candidates(commit: Mapping[str, Any], filters: CommitFilter) -> list[tuple[str, int, int]]:
    found = []
    for change in commit["files"]:
        if (
            change["change_type"] not in _EDITABLE
            or change["is_binary"]
            or change.get("patch_truncated")
            or not change.get("patch")
            or filters.is_generated(change["path"])
        ):
            continue
        found += [(change["path"], first, last) for first, last in added_runs(change["patch"])]
    return found


def fim_tasks(
    repo: str | Path,
    commits: Sequence[Mapping[str, Any]],
    filters: CommitFilter,
    redactor: Redactor,
    seed: int,
    max_file_bytes: int,
) -> list[FimTask]:
    """One FIM question per commit that adds lines, from its post-image files."""
    chosen: list[tuple[str, str, int, int]] = []
    for commit in commits:
        candidates = _candidates(commit, filters)
        if candidates:
            digest = hashlib.sha256(f"{seed}:fim:{commit['sha']}".encode()).digest()
            path, first, last = candidates[int.from_bytes(digest[:8], "big") % len(candidates)]
            chosen.append((commit["sha"], path, first, last))
    names = [f"{sha}:{path}" for sha, path, _, _ in chosen]
    tasks = []
    for (sha, path, first, last), (_, content) in zip(chosen, read_blobs(repo, names), strict=True):
        if len(content) > max_file_bytes or b"\0" in content[:8000]:
            continue
        lines = content.decode("utf-8", errors="replace").splitlines(keepends=True)
        tasks.append(
            FimTask(
                sha=sha,
                path=path,
                language=language(path),
                prefix=redactor.redact("".join(lines[: first - 1])),
                middle=redactor.redact("".join(lines[first - 1 : last - 1])),
                suffix=redactor.redact("".join(lines[last - 1 :])),
            )
        )
    return tasks


def parses(task: FimTask, middle: str) -> bool | None:
    """Whether a Python file still parses with ``middle`` filled in; None for other languages
    and for files that do not parse with the real middle either (nothing to measure)."""
    if task.language != "python":
        return None
    try:
        ast.parse(task.prefix + task.middle + task.suffix)
    except (SyntaxError, ValueError):
        return None
    try:
        ast.parse(task.prefix + middle + task.suffix)
    except (SyntaxError, ValueError):
        return False
    return True


def score_fim(task: FimTask, generation: str) -> dict[str, float | None]:
    """The three FIM metrics of one generated middle (``parses`` None where not measured)."""
    parsed = parses(task, generation)
    return {
        "exact_match": float(exact_match(generation, task.middle)),
        "edit_similarity": edit_similarity(generation, task.middle),
        "parses": None if parsed is None else float(parsed),
    }
