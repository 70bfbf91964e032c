"""Null models: answers that know nothing about the question, for the report's baselines and
for the tests that no metric can be fooled (tests/test_null_models.py).

A metric that an empty, echoed or random answer can win is a bug; a reader can only tell a
model's score apart from such answers by seeing theirs. Each null model answers every question
an evaluation asks (:func:`repotune.evaluate.stage.asked_prompts`), each answer ended as
generation ends one (the task's token budget and stop strings,
:func:`repotune.evaluate.random_text.ended_answer`), and the stage scores them with its own
scoring code:

* ``empty``: nothing;
* ``echo``: the prompt's text (its special tokens left out);
* ``random``: uniformly random tokens of the run's tokenizer, the whole budget, seeded;
* ``other_reference``: another commit's real answer to the same task, by a seeded
  derangement (:func:`derangement`).

No model runs: the four cost a few tokenizer calls.
"""

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from transformers import PreTrainedTokenizerBase

from repotune.evaluate.fim import FIM
from repotune.evaluate.random_text import ended_answer
from repotune.evaluate.tasks import CODE_CHANGE, COMMIT_MESSAGE
from repotune.inference.budget import Budget
from repotune.inference.decoding import Generation
from repotune.inference.prompts import Prompt
from repotune.shards.tokenizer import TextEncoder

if TYPE_CHECKING:
    from repotune.evaluate.stage import Questions

NULL_MODELS = ("empty", "echo", "random", "other_reference")


def references(asked: "Questions", task: str, count: int) -> list[str]:
    """The real answers of a task, written as a model writes them (a code change as the diff's
    added lines); the ``count`` fixed-prompt behavioural tests have none (empty)."""
    if task == COMMIT_MESSAGE:
        return [example.reference for example in asked.commit_messages]
    if task == CODE_CHANGE:  # the question ends with the first line's "+"
        return [
            "".join(f"+{line}\n" for line in example.reference.split("\n"))[1:]
            for example in asked.code_changes
        ]
    if task == FIM:
        return [question.middle for question in asked.fim]
    return [""] * count


def commits_of(asked: "Questions", task: str, count: int) -> list[str]:
    """Each question's commit (a fixed-prompt test's: its index, no commit)."""
    items = {COMMIT_MESSAGE: asked.commit_messages, CODE_CHANGE: asked.code_changes, FIM: asked.fim}
    if task in items:
        return [item.sha for item in items[task]]
    return [str(index) for index in range(count)]


def derangement(commits: Sequence[str], seed: int) -> list[int]:
    """For item ``i`` the index of the item whose answer it gets: never itself, and of another
    commit whenever no commit holds more than half the items. The items are grouped by commit,
    groups in a seeded order, and each takes the answer of the item as many places on as the
    largest group has items (with one item, its own: there is no other)."""
    count = len(commits)
    if count < 2:
        return list(range(count))
    generator = np.random.Generator(np.random.PCG64(seed))
    groups: dict[str, list[int]] = {}
    for index in generator.permutation(count).tolist():
        groups.setdefault(commits[index], []).append(index)
    order = [index for group in groups.values() for index in group]
    shift = min(max(len(group) for group in groups.values()), count - 1)
    chosen = [0] * count
    for place, index in enumerate(order):
        chosen[index] = order[(place + shift) % count]
    return chosen


def _task_seed(seed: int, task: str) -> list[int]:
    return [seed, zlib.crc32(task.encode())]


def null_answers(
    name: str,
    asked: "Questions",
    prompts: Mapping[str, Sequence[Prompt]],
    budgets: Mapping[str, Budget],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
) -> dict[str, list[Generation]]:
    """Null model ``name``'s answer to every question of ``prompts`` (the stage's
    :func:`~repotune.evaluate.stage.task_prompts`, within each task's ``budgets``), ended as
    generation ends an answer: at the budget or the prompt's stop strings."""
    encode = TextEncoder(tokenizer, ())
    special = set(tokenizer.all_special_ids)
    answered = {}
    for task, asked_prompts in prompts.items():
        limit = budgets[task].new_tokens
        write = _writer(name, asked, task, asked_prompts, limit, tokenizer, encode, special, seed)
        answered[task] = [
            ended_answer(tokenizer, write(index), limit, prompt.stops)
            for index, prompt in enumerate(asked_prompts)
        ]
    return answered


def _writer(
    name: str,
    asked: "Questions",
    task: str,
    prompts: Sequence[Prompt],
    budget: int,
    tokenizer: PreTrainedTokenizerBase,
    encode: TextEncoder,
    special: set[int],
    seed: int,
) -> Callable[[int], list[int]]:
    """The token ids null model ``name`` writes for question ``index`` of ``task``."""
    if name == "empty":
        return lambda index: []
    if name == "echo":

        def echo(index: int) -> list[int]:
            return [token for token in prompts[index].ids if token not in special]

        return echo
    if name == "random":
        generator = np.random.Generator(np.random.PCG64(_task_seed(seed, task)))
        drawn = generator.integers(0, len(tokenizer), size=(len(prompts), budget)).tolist()
        return lambda index: drawn[index]
    if name == "other_reference":
        real = references(asked, task, len(prompts))
        chosen = derangement(commits_of(asked, task, len(prompts)), seed)
        return lambda index: encode.plain([real[chosen[index]]])[0] if real[chosen[index]] else []
    raise ValueError(f"null model {name!r} is not one of {', '.join(NULL_MODELS)}")
