"""Fill-in-the-middle in evaluation: the questions' prompts and scores.

Each question (:mod:`repotune.evaluate.fim_tasks`) is asked as ``repotune complete`` asks it
(:func:`repotune.inference.infill.infill_prompt`: the FIM format of the run's record, the
file's path before the markers, prefix and suffix cut by whole lines to the prompt budget),
decoded greedily to the end of the middle (EOS or a marker), and scored against the real
middle:

* ``exact_match``: the middle as written (trailing whitespace aside);
* ``edit_similarity``: the Indel ratio 2 LCS / (|a| + |b|) = rapidfuzz ``fuzz.ratio`` / 100;
* ``parses``: whether a Python file still parses with the generated middle (``ast.parse``, as
  SAFIM's syntax checks), measured only where parsing can tell: on Python questions whose
  real file parses and whose prefix and suffix alone do not. A blank middle never parses.

Most gaps parse when left empty (a statement between statements: in the default run 16 of 17
questions), so over every question the rate credits any answer that breaks nothing, an empty
one or another commit's code alike; :func:`fim_facts` reports, beside the metrics, how often
the empty middle parses, the rate over every Python question, and each model's share of blank
answers.
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


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def parses_in_file(task: FimTask, middle: str) -> bool | None:
    """Whether a Python file still parses with ``middle`` filled in; None for other languages
    and for files that do not parse with the real middle either. A blank middle never parses:
    the real middle is never blank, and leaving the gap empty is no answer."""
    if task.language != "python" or not _parses(task.prefix + task.middle + task.suffix):
        return None
    return bool(middle.strip()) and _parses(task.prefix + middle + task.suffix)


def parses(task: FimTask, middle: str) -> bool | None:
    """:func:`parses_in_file` where parsing can tell, None elsewhere: also None where the file
    parses with the gap left empty, since there any answer that breaks nothing parses."""
    measured = parses_in_file(task, middle)
    if measured is None or _parses(task.prefix + task.suffix):
        return None
    return measured


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


def _rate(hits: int, n: int) -> dict[str, float | int | None]:
    return {"rate": hits / n if n else None, "parsing": hits, "n": n}


def fim_facts(tasks: Sequence[FimTask], generations: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What a reader needs beside the FIM metrics to know what they can tell (report.json's
    ``fim``), over the Python questions whose real file parses: how often the middle left
    empty parses (``empty_middle_parses``: the questions ``parses`` leaves out), and per
    variant the share of blank answers and the parse rate over all of them
    (``parses_in_file``)."""
    measured = [task for task in tasks if parses_in_file(task, task.middle) is not None]
    empty_parses = sum(_parses(task.prefix + task.suffix) for task in measured)
    facts: dict[str, Any] = {"empty_middle_parses": _rate(empty_parses, len(measured))}
    for name, texts in generations.items():
        empty = sum(not text.strip() for text in texts)
        answers = zip(tasks, texts, strict=True)
        parsing = sum(bool(parses_in_file(task, text)) for task, text in answers)
        facts[name] = {
            "empty_answers": {
                "share": empty / len(texts) if texts else None,
                "empty": empty,
                "n": len(texts),
            },
            "parses_in_file": _rate(parsing, len(measured)),
        }
    return facts


def fim_item_scores(
    tasks: Sequence[FimTask], generations: Mapping[str, Sequence[str]]
) -> dict[str, list[dict[str, float | None]]]:
    """Per variant, each question's three scores (:func:`score_fim`), in question order:
    generations.jsonl's ``scores``, so another run's answers to the same questions can be
    paired with these."""
    return {
        name: [score_fim(task, text) for task, text in zip(tasks, texts, strict=True)]
        for name, texts in generations.items()
    }


def by_metric(
    items: Mapping[str, Sequence[Mapping[str, float | None]]],
) -> dict[str, dict[str, list[float]]]:
    """Per variant, each metric's per-question scores, paired across variants: ``parses`` only
    over the questions where it is measured (which depends on the question alone)."""
    return {
        name: {
            metric: [row[metric] for row in rows if row[metric] is not None]
            for metric in FIM_METRICS
        }
        for name, rows in items.items()
    }
