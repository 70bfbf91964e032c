"""Fill-in-the-middle questions from the held-out future: complete a change where it was made.

For each sampled test commit, one run of added lines in one hunk is masked in the file *after*
the commit (its post-image, read from the repository): the model gets the code before the run
(prefix) and after it (suffix) and is asked for the run (middle), as an editor would ask it at
that spot. Because test commits are newer than anything trained on, this measures completion
on code the model has not seen, in the repository's own style. Scores: exact match and edit
similarity of the middle and, for Python files, whether the file with the generated middle
still parses (:mod:`repotune.evaluate.fim`).

Which run a commit is asked for, and which commits are asked when there are more than the
sample, are hashes of the seed and the sha, as for the code-change task: the same questions
on every rerun, whatever else the split holds. Prefix, middle and suffix pass through the same
redaction as training data. This module reads no model: the workflow builds the questions once
(rule ``fim_questions``) for every model.
"""

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repotune.curate.filters import CommitFilter
from repotune.curate.redact import Redactor
from repotune.snapshot.blobs import read_blobs
from repotune.snapshot.languages import language

# Why a test commit gave no question (fim_questions.json counts each).
SKIP_REASONS = ("no_added_lines", "not_drawn", "too_large", "binary", "blank_middle")
_BINARY_PROBE = 8000
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


@dataclass(frozen=True)
class _Choice:
    """The run of added lines a commit is asked for, and its place in the seeded draw."""

    rank: int
    order: int
    sha: str
    path: str
    first: int
    last: int


@dataclass
class FimDraw:
    """The questions drawn, in test-split order, and why the other test commits gave none."""

    tasks: list[FimTask]
    skipped: Counter[str] = field(default_factory=Counter)


def _choice(
    order: int, commit: Mapping[str, Any], filters: CommitFilter, seed: int
) -> _Choice | None:
    candidates = _candidates(commit, filters)
    if not candidates:
        return None
    digest = hashlib.sha256(f"{seed}:fim:{commit['sha']}".encode()).digest()
    path, first, last = candidates[int.from_bytes(digest[:8], "big") % len(candidates)]
    rank = int.from_bytes(digest[8:16], "big")
    return _Choice(rank, order, commit["sha"], path, first, last)


def _task(choice: _Choice, content: bytes, redactor: Redactor) -> FimTask:
    lines = content.decode("utf-8", errors="replace").splitlines(keepends=True)
    first, last = choice.first, choice.last
    return FimTask(
        sha=choice.sha,
        path=choice.path,
        language=language(choice.path),
        prefix=redactor.redact("".join(lines[: first - 1])),
        middle=redactor.redact("".join(lines[first - 1 : last - 1])),
        suffix=redactor.redact("".join(lines[last - 1 :])),
    )


def fim_tasks(
    repo: str | Path,
    commits: Iterable[Mapping[str, Any]],
    filters: CommitFilter,
    redactor: Redactor,
    seed: int,
    max_file_bytes: int,
    samples: int | None = None,
) -> FimDraw:
    """At most ``samples`` FIM questions (None: one per commit that adds lines), one per
    commit, from post-image files; drawn in seeded order, so a file that cannot be asked
    (too large, binary, a blank run) gives its place to the next commit."""
    skipped: Counter[str] = Counter()
    choices = []
    for order, commit in enumerate(commits):
        chosen = _choice(order, commit, filters, seed)
        if chosen is None:
            skipped["no_added_lines"] += 1
        else:
            choices.append(chosen)
    choices.sort(key=lambda choice: (choice.rank, choice.order))
    wanted = len(choices) if samples is None else samples
    tasks: list[tuple[int, FimTask]] = []
    start = 0
    while len(tasks) < wanted and start < len(choices):
        batch = choices[start : start + max(wanted - len(tasks), 1)]
        start += len(batch)
        names = [f"{choice.sha}:{choice.path}" for choice in batch]
        for choice, (_, content) in zip(batch, read_blobs(repo, names), strict=True):
            if len(content) > max_file_bytes:
                skipped["too_large"] += 1
            elif b"\0" in content[:_BINARY_PROBE]:
                skipped["binary"] += 1
            else:
                task = _task(choice, content, redactor)
                if task.middle.strip():
                    tasks.append((choice.order, task))
                else:
                    skipped["blank_middle"] += 1
    skipped["not_drawn"] += len(choices) - start
    return FimDraw([task for _, task in sorted(tasks, key=lambda pair: pair[0])], skipped)
