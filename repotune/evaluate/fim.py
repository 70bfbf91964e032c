"""Fill-in-the-middle in evaluation: prompts, scores and report entries of the FIM questions.

Each question (:mod:`repotune.evaluate.fim_tasks`) is asked as ``repotune complete`` asks it
(:func:`repotune.evaluate.fim_prompt.prompt_for`: the format the run's FIM documents were
trained in, else the one the tokenizer carries; the file's path in the header, prefix and
suffix cut by whole lines to the training block), decoded
greedily to the end of the middle (EOS or a FIM marker), and scored against the real middle:

* ``exact_match``: the middle as written (trailing whitespace aside);
* ``edit_similarity``: 1 - normalised Levenshtein distance, partial credit;
* ``parses``: whether a Python file still parses with the generated middle (``ast.parse``, as
  SAFIM's syntax checks), measured only on Python questions whose real file parses; a blank
  middle never parses.

Most gaps parse when left empty, so beside the metrics :func:`fim_facts` reports how often the
empty middle would parse (the metric's null baseline), each model's share of blank answers,
and its parse rate on the questions whose prefix and suffix alone do not parse.
"""

import ast
from collections.abc import Mapping, Sequence
from typing import Any

from repotune.evaluate.fim_prompt import Gap, native_fim, prompt_for
from repotune.evaluate.fim_tasks import FimTask
from repotune.evaluate.metrics import edit_similarity, exact_match
from repotune.shards.fim import FimFormat

FIM = "fim"
FIM_METRICS = ("exact_match", "edit_similarity", "parses")


def parses(task: FimTask, middle: str) -> bool | None:
    """Whether a Python file still parses with ``middle`` filled in; None for other languages
    and for files that do not parse with the real middle either (nothing to measure). A blank
    middle never parses: most gaps (a statement between statements) parse when left empty, so
    an empty answer would otherwise score as well as the real one."""
    if task.language != "python":
        return None
    try:
        ast.parse(task.prefix + task.middle + task.suffix)
    except (SyntaxError, ValueError):
        return None
    if not middle.strip():
        return False  # the real middle is never blank: leaving the gap empty is no answer
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
    tokenizer: Any,
    template: str,
    markers: Sequence[str],
    tasks: Sequence[FimTask],
    max_prompt: int,
    trained: FimFormat | None = None,
) -> tuple[list[list[int]], tuple[str, ...]]:
    """Every question's prompt ids within ``max_prompt`` tokens, and the stop strings;
    ``trained`` is the format of the run's FIM training documents (None: none were made)."""
    stops: tuple[str, ...] = tuple(markers)
    prompts = []
    for task in tasks:
        gap = Gap(task.prefix, task.suffix, task.path)
        ids, stops = prompt_for(tokenizer, template, markers, gap, max_prompt, trained)
        prompts.append(ids)
    return prompts, stops


def fim_format(template: str, tokenizer: Any, trained: FimFormat | None = None) -> str | None:
    """The FIM format the questions are asked in; None: a plain continuation of the prefix
    (no FIM training documents and no FIM tokens: the model never learnt to fill in)."""
    fmt = trained or native_fim(template, tokenizer)
    return None if fmt is None else fmt.name


def _rate(hits: int, n: int) -> dict[str, float | int | None]:
    return {"rate": hits / n if n else None, "parsing": hits, "n": n}


def _context_parses(task: FimTask) -> bool:
    """Whether the file parses with the middle left out: then ``parses`` credits any answer
    that keeps it parsing, and only a non-blank one gets that credit."""
    try:
        ast.parse(task.prefix + task.suffix)
    except (SyntaxError, ValueError):
        return False
    return True


def fim_facts(tasks: Sequence[FimTask], generations: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """What a reader needs beside the FIM metrics to know what they can tell (report.json's
    ``fim``): how often the empty middle would parse (``parses``'s null baseline, over the
    questions where it is measured), and per variant the share of blank answers and the parse
    rate on the questions whose prefix and suffix alone do not parse (where parsing says
    something about the answer)."""
    measured = [index for index, task in enumerate(tasks) if parses(task, task.middle) is not None]
    context = [_context_parses(tasks[index]) for index in measured]
    telling = [index for index, parsing in zip(measured, context, strict=True) if not parsing]
    facts: dict[str, Any] = {"empty_middle_parses": _rate(sum(context), len(measured))}
    for name, texts in generations.items():
        if len(texts) != len(tasks):
            raise ValueError(f"{name}: {len(texts)} answers to {len(tasks)} FIM questions")
        empty = sum(not text.strip() for text in texts)
        parsing = sum(bool(parses(tasks[index], texts[index])) for index in telling)
        facts[name] = {
            "empty_answers": {
                "share": empty / len(texts) if texts else None,
                "empty": empty,
                "n": len(texts),
            },
            "parses_where_context_does_not": _rate(parsing, len(telling)),
        }
    return facts


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
