"""Fill-in-the-middle in evaluation: the questions' prompts and scores.

Each question (:mod:`repotune.evaluate.fim_tasks`) is asked as ``repotune complete`` asks it
(:func:`repotune.inference.infill.infill_prompt`: the FIM format of the run's record, the
file's path before the markers, prefix and suffix cut by whole lines to the prompt budget),
decoded greedily to the end of the middle (EOS or a marker), and scored against the real
middle:

* ``exact_match``: the middle as written (trailing whitespace aside);
* ``edit_similarity``: 1 - normalised Levenshtein distance, partial credit;
* ``parses``: whether a Python file still parses with the generated middle (``ast.parse``, as
  SAFIM's syntax checks), measured only on Python questions whose real file parses.
"""

import ast
from collections.abc import Mapping, Sequence
from typing import Any

from repotune.evaluate.fim_tasks import FimTask
from repotune.evaluate.metrics import edit_similarity, exact_match
from repotune.inference.infill import Gap, infill_prompt
from repotune.inference.prompts import Prompt
from repotune.inference.record import RunRecord

FIM = "fim"
FIM_METRICS = ("exact_match", "edit_similarity", "parses")


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


def fim_prompts(
    tasks: Sequence[FimTask], record: RunRecord, tokenizer: Any, max_tokens: int
) -> list[Prompt]:
    """Every question's prompt within ``max_tokens``, as ``repotune complete`` builds it."""
    return [
        infill_prompt(Gap(task.prefix, task.suffix, task.path), record, tokenizer, max_tokens)
        for task in tasks
    ]


def fim_scores(
    tasks: Sequence[FimTask], generations: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, list[float]]]:
    """Per variant, each metric's per-question scores, paired across variants: ``parses`` only
    over the questions where it is measured (which depends on the question alone)."""
    scored = {
        name: [score_fim(task, text) for task, text in zip(tasks, texts, strict=True)]
        for name, texts in generations.items()
    }
    return {
        name: {
            metric: [row[metric] for row in rows if row[metric] is not None]
            for metric in FIM_METRICS
        }
        for name, rows in scored.items()
    }
