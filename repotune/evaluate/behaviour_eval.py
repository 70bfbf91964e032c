"""The behavioural tests in an evaluation: which generations each test checks, its verdict, the
pass rate of random text beside it, and report.json's rows.

A fixed-prompt test (:mod:`repotune.evaluate.behaviour`) checks the ``behaviour`` task's
generation of its prompt: one sample, reported without a verdict. A task test checks every
commit message the model wrote for the sampled held-out diffs: its pass rate has the diffs as
its sample, resampled by commit with an exact sign test (:func:`task_test_entries`); it takes
``behaviour.pass_rate``'s role, exploratory (another commit's real message passes a check of
form), so it is shown with its p but gets no verdict.
Beside each pattern test stands its pass rate on uniformly random tokens ended as its
generations end (:func:`random_baselines`), so a reader sees what the test can tell apart
from chance.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from repotune.curate.redact import Redactor
from repotune.evaluate import report
from repotune.evaluate.behaviour import (
    BehaviourTest,
    CheckResult,
    check,
    check_answers,
    kind_of,
    on_task,
    pass_rate,
    sample_of,
)
from repotune.evaluate.random_text import DRAWS, random_generations
from repotune.evaluate.sandbox import DEFAULT_LIMITS, SandboxLimits
from repotune.evaluate.tasks import COMMIT_MESSAGE
from repotune.inference.budget import Budget
from repotune.inference.decoding import Generation

VARIANTS = report.VARIANTS
BEHAVIOUR = "behaviour"  # the generated task of the fixed-prompt tests
SINGLE_SAMPLE = "single sample: no verdict"


def fixed_prompt(tests: Sequence[BehaviourTest]) -> list[BehaviourTest]:
    """The tests with a prompt of their own (generated as the ``behaviour`` task); the others
    check the commit-message task's generations."""
    return [test for test in tests if not on_task(test)]


def ended(generations: Sequence[Generation]) -> list[tuple[str, bool]]:
    """Each generation's text and whether it ended by itself (not at the token limit)."""
    return [(generation.text, generation.finish != "length") for generation in generations]


def behaviour_results(
    tests: Sequence[BehaviourTest],
    generations: Mapping[str, Mapping[str, Sequence[Generation]]],
    allow_code_execution: bool = False,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> dict[str, list[CheckResult]]:
    """Every fixed-prompt test checked on each variant's generation of its prompt (after all
    generation); python tests run generated code only with ``allow_code_execution``, else
    are skipped, and run within ``limits``."""
    return {
        name: [
            check(test, text, limits, allow_code_execution=allow_code_execution, ended=done)
            for test, (text, done) in zip(
                fixed_prompt(tests), ended(generations[name][BEHAVIOUR]), strict=True
            )
        ]
        for name in VARIANTS
    }


def task_results(
    tests: Sequence[BehaviourTest],
    generations: Mapping[str, Mapping[str, Sequence[Generation]]],
) -> dict[str, list[list[CheckResult]]]:
    """Every task test checked on each variant's commit messages, ``[test][diff]`` in the
    order of the task tests and of the commit-message questions."""
    return {
        name: [
            check_answers(test, ended(generations[name][COMMIT_MESSAGE]))
            for test in tests
            if on_task(test)
        ]
        for name in VARIANTS
    }


def task_test_entries(
    tests: Sequence[BehaviourTest],
    on_diffs: Mapping[str, Sequence[Sequence[CheckResult]]],
    seed: int,
    test_commits: int,
    commits: Sequence[str] | None = None,
    primary: str = report.DEFAULT_PRIMARY,
) -> dict[str, dict[str, Any]]:
    """Each task test's pass rate over the diffs (``commits``: each diff's commit, resampled
    together), base and adapted, with its interval, exact sign test, role and verdict, given
    as the pass-rate metric's entry is (the same gates and role), by name."""
    enough = report.enough_test_commits(test_commits)
    entries = {}
    for index, test in enumerate(test for test in tests if on_task(test)):
        passed = {name: [float(r.passed) for r in on_diffs[name][index]] for name in VARIANTS}
        entry = report.scored_entry(
            "behaviour.pass_rate", passed["base"], passed["adapted"], seed, commits, enough
        )
        entries[test.name] = report.assign_verdicts(
            {"behaviour.pass_rate": entry}, primary, enough
        )["behaviour.pass_rate"]
    return entries


def random_baselines(
    tests: Sequence[BehaviourTest],
    tokenizer: PreTrainedTokenizerBase,
    stops: Sequence[str],
    budgets: Mapping[str, Budget],
    seed: int,
) -> dict[str, float | None]:
    """Each pattern test's pass rate on uniformly random tokens ended as its generations end
    (the same token budget and stop strings: the run's ``stops``, a fixed-prompt test's own
    too), by name."""
    rates = {}
    for test in tests:
        if kind_of(test) != "pattern":
            continue
        task = COMMIT_MESSAGE if on_task(test) else BEHAVIOUR
        ends = tuple(stops) + (() if on_task(test) else test.stop)
        answers = random_generations(tokenizer, DRAWS, budgets[task].new_tokens, ends, seed)
        rates[test.name] = pass_rate(check_answers(test, ended(answers)))
    return rates


def behaviour_by_kind(
    tests: Sequence[BehaviourTest],
    checks: Mapping[str, Sequence[CheckResult]],
    on_diffs: Mapping[str, Sequence[Sequence[CheckResult]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Pass rate per kind of test (:func:`repotune.evaluate.behaviour.kind_of`: a pattern
    test and a test that runs code say different things) and variant; the task tests'
    checks of their diffs are a group of their own (``pattern on diffs``)."""
    groups = [
        (kind_of(test), {name: [checks[name][i]] for name in VARIANTS})
        for i, test in enumerate(fixed_prompt(tests))
    ]
    groups += [
        (f"{kind_of(test)} on diffs", {name: list((on_diffs or {})[name][i]) for name in VARIANTS})
        for i, test in enumerate(test for test in tests if on_task(test))
    ]
    counts = Counter(group for group, _ in groups)
    results: dict[str, dict[str, list[CheckResult]]] = {}
    for group, found in groups:
        rows = results.setdefault(group, {name: [] for name in VARIANTS})
        for name in VARIANTS:
            rows[name] += found[name]
    return {
        group: {"count": counts[group]} | {name: pass_rate(rows[name]) for name in VARIANTS}
        for group, rows in results.items()
    }


def behaviour_rows(
    tests: Sequence[BehaviourTest],
    checks: Mapping[str, Sequence[CheckResult]],
    redactor: Redactor,
    on_diffs: Mapping[str, Sequence[Sequence[CheckResult]]] | None = None,
    entries: Mapping[str, Mapping[str, Any]] | None = None,
    random: Mapping[str, float | None] | None = None,
) -> list[dict[str, Any]]:
    """report.json's ``behaviour``: one row per test, reasons redacted (a must_not_match
    reason quotes the generation). A fixed-prompt test: its check per variant and no verdict.
    A task test: per variant its pass count over the diffs and the first failure's reason,
    with its entry's delta, interval and verdict. A pattern test also shows ``random_text``,
    its pass rate on ``random_draws`` random answers."""
    random = random or {}
    fixed, tasks = iter(range(len(checks["base"]))), iter(range(len(entries or {})))
    rows = []
    for test in tests:
        row: dict[str, Any] = {
            "name": test.name,
            "kind": kind_of(test),
            "sample": sample_of(test),
            "random_text": random.get(test.name),
            "random_draws": DRAWS if test.name in random else None,
        }
        if on_task(test):
            assert on_diffs is not None and entries is not None
            index, entry = next(tasks), entries[test.name]
            for name in VARIANTS:
                results = on_diffs[name][index]
                failure = next((r.reason for r in results if not r.passed), None)
                row[name] = {
                    "passed": sum(r.passed for r in results),
                    "n": len(results),
                    "rate": entry[name],
                    "first_failure": None if failure is None else redactor.redact(failure),
                }
            row |= {key: entry[key] for key in ("delta", "interval", "p", "role", "verdict")}
        else:
            index = next(fixed)
            for name in VARIANTS:
                result = checks[name][index]
                row[name] = vars(result) | {"reason": redactor.redact(result.reason)}
            row["verdict"] = SINGLE_SAMPLE
        rows.append(row)
    return rows
