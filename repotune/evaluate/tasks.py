"""Evaluation examples from held-out commits: a prompt, the real answer, and how to score it.

Two tasks, both rendered with the template training used (:mod:`repotune.shards.render`), so the
model is asked exactly the kind of question it learnt to answer:

* **commit message**: the prompt is a commit's ``change_to_message`` rendering up to the message
  marker; the reference is the real message. Scored with B-Norm BLEU, ROUGE-L, edit similarity
  and subject exact match.
* **code change**: the prompt is the commit's ``message_to_change`` rendering (message, then the
  diff) up to one run of added lines in one hunk, ending with the ``+`` of its first line (the
  prompt says that an added line starts); the reference is that run of added lines. The model
  continues the diff, and ``+`` followed by what it writes, up to its first line that is not
  an added line, is its answer (as line-level completion in CrossCodeEval and RepoBench, on a
  diff). Scored with exact match and edit similarity of the added code, ``+`` markers removed.

Both prompts are built by :mod:`repotune.inference.prompts`, the functions ``repotune suggest``
uses, within the budget of :mod:`repotune.inference.budget` (:func:`example_prompt`).

Which commits are evaluated is a seeded draw when there are more than the sample size, and which
run of added lines a commit is asked for is a hash of the seed and its sha, so reruns ask the same
questions.
"""

import hashlib
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from repotune.errors import InputError
from repotune.evaluate.metrics import corpus_summary, score_pair
from repotune.inference.prompts import ADDED, Prompt, code_change_prompt, commit_message_prompt
from repotune.inference.record import RunRecord
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    Template,
    file_pieces,
    message_text,
    render,
    render_prompt,
)
from repotune.shards.tokenizer import TextEncoder

COMMIT_MESSAGE = "commit_message"
CODE_CHANGE = "code_change"
MESSAGE_METRICS = ("bnorm_bleu", "rouge_l", "edit_similarity", "subject_exact_match")
CODE_METRICS = ("exact_match", "edit_similarity")
COLUMNS = ("sha", "subject", "body", "files")
BATCH_COMMITS = 512


@dataclass(frozen=True)
class Example:
    """One question: ``prompt`` for the model, ``reference`` to score its answer against.

    ``prompt_ids`` are the whole prompt's token ids as the training shards hold them
    (repotune.shards.prompt.prompt_ids), not a fresh encoding of ``prompt``, which can differ
    where the prompt ends in whitespace; the model is given them cut to its budget
    (:func:`example_prompt`), from ``commit`` and, for a code change, ``line_start`` (where the
    asked run's first ``+`` line starts in the ``message_to_change`` rendering).
    """

    task: str
    sha: str
    prompt: str
    reference: str
    prompt_ids: tuple[int, ...]
    commit: Mapping[str, Any] = field(default_factory=dict, repr=False)
    line_start: int | None = None


def _open_commits(path: str | Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path, pre_buffer=False)  # pre-buffering grows with the file
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"test commits '{path}'", f"cannot be read ({error})", "rerun the curate stage"
        ) from None


def count_commits(path: str | Path) -> int:
    """How many commits the test split holds (from the file's footer, nothing read)."""
    return _open_commits(path).metadata.num_rows


def iter_commits(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The test split's commits with their index, in file order, ``BATCH_COMMITS`` at a time.

    Evaluation holds one batch, never the split: the test split of a large history is
    hundreds of thousands of commits.
    """
    index = 0
    for batch in _open_commits(path).iter_batches(BATCH_COMMITS, columns=list(COLUMNS)):
        for row in batch.to_pylist():
            yield index, row
            index += 1


def read_commits(path: str | Path, indices: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """The test split's commits at ``indices`` (all when None), in file order.

    Read batch by batch; only the chosen rows become Python objects.
    """
    wanted = None if indices is None else np.unique(np.fromiter(indices, dtype=np.int64))
    rows: list[dict[str, Any]] = []
    start = 0
    for batch in _open_commits(path).iter_batches(BATCH_COMMITS, columns=list(COLUMNS)):
        if wanted is None:
            rows.extend(batch.to_pylist())
        else:
            local = wanted[(wanted >= start) & (wanted < start + batch.num_rows)] - start
            if len(local):
                rows.extend(batch.take(pa.array(local)).to_pylist())
        start += batch.num_rows
    return rows


def sample_indices(total: int, size: int, seed: int) -> list[int]:
    """The positions :func:`sample` draws from ``total`` items: the same seeded draw."""
    if size >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), size))


def sample(items: Sequence[Any], size: int, seed: int) -> list[Any]:
    """``size`` items drawn without replacement (all when there are fewer), in input order."""
    return [items[index] for index in sample_indices(len(items), size, seed)]


def commit_message_examples(
    commits: Sequence[Mapping[str, Any]], record: RunRecord, encoder: TextEncoder
) -> list[Example]:
    """A commit-message question per commit (``encoder``:
    :func:`repotune.inference.prompts.prompt_encoder`)."""
    return [
        Example(
            task=COMMIT_MESSAGE,
            sha=commit["sha"],
            prompt=render_prompt(commit, CHANGE_TO_MESSAGE, record.template),
            reference=message_text(commit),
            prompt_ids=commit_message_prompt(commit, record, encoder, None).ids,
            commit=commit,
        )
        for commit in commits
    ]


def _added_runs(piece: str, hunk_start: int) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of each run of ``+`` lines in the hunk body of
    ``piece`` (which starts at ``hunk_start``; the hunk's ``@@`` line is skipped)."""
    runs: list[tuple[int, int]] = []
    lines = piece[hunk_start:].splitlines(keepends=True)
    offset = hunk_start + len(lines[0]) if lines else hunk_start
    run_start: int | None = None
    for line in lines[1:]:
        if line.startswith("+"):
            run_start = offset if run_start is None else run_start
        elif run_start is not None:
            runs.append((run_start, offset))
            run_start = None
        offset += len(line)
    if run_start is not None:
        runs.append((run_start, offset))
    return runs


def asked_run(commit: Mapping[str, Any], template: Template, seed: int) -> tuple[int, str] | None:
    """Where the run of added lines ``commit`` is asked for starts in its
    ``message_to_change`` rendering, and the run's text; None when it adds no line."""
    head = render_prompt(commit, MESSAGE_TO_CHANGE, template)
    pieces: list[str] = []
    candidates: list[tuple[int, int, int]] = []
    for change in commit["files"]:
        header = template.file_header(change)
        for number, piece in enumerate(file_pieces(change, template)):
            hunk_start = (len(header) if number == 0 else 0) + len(template.hunk_prefix)
            if number == 0 and not change.get("patch"):
                hunk_start = len(piece)
            for start, end in _added_runs(piece, hunk_start):
                candidates.append((len(pieces), start, end))
            pieces.append(piece)
    if not candidates:
        return None
    digest = hashlib.sha256(f"{seed}:{commit['sha']}".encode()).digest()
    index, start, end = candidates[int.from_bytes(digest[:8], "big") % len(candidates)]
    line_start = len(head) + sum(len(piece) for piece in pieces[:index]) + start
    return line_start, pieces[index][start:end]


def code_change_example(
    commit: Mapping[str, Any], record: RunRecord, seed: int, encoder: TextEncoder
) -> Example | None:
    """The code-change question of ``commit``, or None when it adds no line."""
    found = asked_run(commit, record.template, seed)
    if found is None:
        return None
    line_start, run = found
    prompt = code_change_prompt(commit, record, encoder, line_start, None)
    return Example(
        task=CODE_CHANGE,
        sha=commit["sha"],
        prompt=render(commit, MESSAGE_TO_CHANGE, record.template)[: line_start + len(ADDED)],
        reference=added_code(run),
        prompt_ids=prompt.ids,
        commit=commit,
        line_start=line_start,
    )


def code_change_examples(
    commits: Sequence[Mapping[str, Any]],
    record: RunRecord,
    seed: int,
    size: int,
    encoder: TextEncoder,
) -> list[Example]:
    """Up to ``size`` code-change questions from the commits that add lines (a seeded draw)."""
    examples = [code_change_example(commit, record, seed, encoder) for commit in commits]
    return sample([example for example in examples if example is not None], size, seed)


def sampled_code_changes(
    path: str | Path, record: RunRecord, seed: int, size: int, encoder: TextEncoder
) -> list[Example]:
    """:func:`code_change_examples` of the whole test split, streamed in two passes.

    Pass one keeps only the positions of the commits that add lines (nothing encoded); pass
    two renders and encodes the drawn ones. The draw is the same as on the split held in
    memory.
    """
    template = record.template
    eligible = [index for index, commit in iter_commits(path) if asked_run(commit, template, seed)]
    chosen = read_commits(path, sample(eligible, size, seed))
    return [e for c in chosen if (e := code_change_example(c, record, seed, encoder))]


def example_prompt(
    example: Example, record: RunRecord, encoder: TextEncoder, max_tokens: int
) -> Prompt:
    """What the model is asked for ``example``, within ``max_tokens``: the prompt ``repotune
    suggest`` builds for the same commit (commit messages), the same builder's code-change
    question (code changes)."""
    if example.task == COMMIT_MESSAGE:
        return commit_message_prompt(example.commit, record, encoder, max_tokens)
    assert example.line_start is not None, "a code-change example knows its added line"
    return code_change_prompt(example.commit, record, encoder, example.line_start, max_tokens)


def added_code(diff_text: str) -> str:
    """The leading run of ``+`` lines of ``diff_text``, without their ``+``, one per line.

    This is how a generated continuation is read: the added lines it wrote before any context,
    removed or header line. The reference goes through the same function.
    """
    code: list[str] = []
    for line in diff_text.splitlines():
        if not line.startswith("+"):
            break
        code.append(line[1:])
    return "\n".join(code)


def answer(task: str, generation: str) -> str:
    """The part of a generation that is scored: a message as written; a code change's lines,
    read from the ``+`` its prompt ends with followed by the generation."""
    return added_code(ADDED + generation) if task == CODE_CHANGE else generation


def metrics_of(task: str) -> tuple[str, ...]:
    """The metrics a task is scored with."""
    return MESSAGE_METRICS if task == COMMIT_MESSAGE else CODE_METRICS


def score(task: str, pairs: Sequence[tuple[str, str]]) -> dict[str, int | float | None]:
    """Mean metrics of ``(answer, reference)`` pairs of one task, with their count."""
    return corpus_summary(pairs, metrics_of(task)).as_dict()


def pair_scores(task: str, pairs: Sequence[tuple[str, str]]) -> dict[str, list[float]]:
    """Each metric of one task, per ``(answer, reference)`` pair in order: what the paired
    bootstrap resamples (their means are :func:`score`)."""
    names = metrics_of(task)
    scored = [score_pair(hypothesis, reference, names) for hypothesis, reference in pairs]
    return {name: [scores[name] for scores in scored] for name in names}
