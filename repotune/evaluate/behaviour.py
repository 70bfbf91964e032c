"""Behavioural tests: does the model still do the small things a person expects of it?

Text metrics compare a generation with one real commit; behavioural tests ask yes/no questions
that hold for any repository: is a generated commit message non-empty, is its subject free of a
trailing period, does a completed Python function actually work. An adapter that raises BLEU but
breaks these has learnt the wrong thing, and a base model that passes them and an adapter that
fails them is a regression a single number would hide.

A pattern test that reads one fixed prompt is one sample, however many checks share that
prompt; four tests on one prompt say no more than one. So a test can instead check the
answers of an evaluation task: ``task: commit_message`` checks every commit message the model
wrote for the sampled held-out diffs (the commit-message task's own generations, so nothing
more is generated), and its pass rate has the diffs as its sample (exploratory in the
report, no verdict: another commit's real message passes a check of form). A fixed-prompt test
stays possible; the report labels it a single sample and gives it no verdict. A pattern test
passes only a generation that ended by itself (end of text or a stop string before the token
limit): a message cut at the limit is not a message, and random text rarely ends.

File format (YAML, see config/behaviour_tests.yaml): a list of tests, each a mapping with

* ``name`` (required): unique, short, used in reports;
* ``prompt``: the text the model continues, given to it verbatim; or
* ``task``: ``commit_message``, to check the commit-message task's generations instead (pattern
  checks only); exactly one of ``prompt`` and ``task``;
* ``must_match``: Python regular expressions that must each be found in the generation
  (``re.search``: anywhere; use ``\\A``/``\\Z``, ``(?m)``, ``(?i)`` to anchor or relax);
* ``must_not_match``: regular expressions none of which may be found;
* ``python_test``: Python source run against the generated code. The generation is written to
  ``generated.py`` in a fresh scratch directory, the test source to ``behaviour_test.py`` beside
  it (``from generated import f`` works), and the test passes when that process exits 0;
* ``prepend_prompt`` (default false): write ``prompt + generation`` to ``generated.py``, for
  completions whose prompt is the start of the code (a function signature and docstring);
* ``stop``: strings at whose first occurrence the generation is cut before any check, as
  HumanEval does (``"\\ndef "``: judge the function, not whatever the model writes after it);
* ``timeout_s`` (default 10): wall-clock seconds the python_test may run.

At least one of ``must_match``, ``must_not_match`` and ``python_test`` is required. Checks run in
that order and the first failure is the result's reason. A test with only ``must_not_match``
passes on garbage (an empty or looping generation matches nothing forbidden), so every shipped
test pairs its negative checks with a positive one that a degenerate generation fails
(tests/test_behaviour.py checks this of config/behaviour_tests.yaml).

Python tests run generated code, so they run only when ``evaluate.behaviour.allow_code_execution``
is true (otherwise they are skipped and the report says so); how they are contained is
:mod:`repotune.evaluate.sandbox`.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from repotune.errors import InputError
from repotune.evaluate.sandbox import (
    DEFAULT_LIMITS,
    CheckResult,
    SandboxLimits,
    run_python_test,
    skipped,
)

DEFAULT_TIMEOUT_S = 10.0
_KEYS = (
    "name",
    "prompt",
    "task",
    "must_match",
    "must_not_match",
    "python_test",
    "prepend_prompt",
    "stop",
    "timeout_s",
)
_CHECKS = ("must_match", "must_not_match", "python_test")
# The evaluation tasks whose generations a test can check instead of a prompt of its own.
TASKS = ("commit_message",)
NOT_ENDED = "did not end: the generation reached the token limit"


@dataclass(frozen=True)
class BehaviourTest:
    """One entry of a behavioural test file (the module docstring describes the fields)."""

    name: str
    prompt: str | None = None  # None: ``task`` says whose generations are checked
    must_match: tuple[str, ...] = ()
    must_not_match: tuple[str, ...] = ()
    python_test: str | None = None
    prepend_prompt: bool = False
    stop: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    task: str | None = None


# --- loading ------------------------------------------------------------------------------


def load_tests(path: str | Path) -> list[BehaviourTest]:
    """Read and validate a behavioural test file; InputError names the file and the entry."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(
            str(path), f"cannot be read ({error.strerror})", "point the path at a test file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InputError(
            str(path), f"is not valid YAML ({' '.join(str(error).split())})", "fix its syntax"
        ) from None
    if not isinstance(data, list):
        raise InputError(
            str(path),
            f"must be a YAML list of tests, not {type(data).__name__}",
            "start each test with '- name: ...' (an empty list is [])",
        )
    tests = [_parse_entry(path, index, entry) for index, entry in enumerate(data)]
    seen: set[str] = set()
    for index, test in enumerate(tests):
        if test.name in seen:
            raise InputError(
                _entry_subject(path, index, test.name),
                "repeats the name of an earlier test",
                "give every test its own name",
            )
        seen.add(test.name)
    return tests


def _entry_subject(path: Path, index: int, name: object = None) -> str:
    label = f"{path} test {index + 1}"
    return f"{label} ('{name}')" if isinstance(name, str) else label


def _parse_entry(path: Path, index: int, entry: object) -> BehaviourTest:
    if not isinstance(entry, dict):
        raise InputError(
            _entry_subject(path, index),
            f"is a {type(entry).__name__}, not a mapping",
            "write each test as 'name:', 'prompt:' and its checks",
        )
    subject = _entry_subject(path, index, entry.get("name"))

    def bad(problem: str, remedy: str) -> InputError:
        return InputError(subject, problem, remedy)

    unknown = sorted(str(key) for key in entry if key not in _KEYS)
    if unknown:
        raise bad(f"has unknown keys {unknown}", f"use only {list(_KEYS)}")
    if not isinstance(entry.get("name"), str):
        raise bad("needs 'name' as a string", "add a 'name:' line")
    if not entry["name"].strip():
        raise bad("has an empty name", "give the test a name")
    task = _task(entry, bad)
    if task is None and not isinstance(entry.get("prompt"), str):
        raise bad("needs 'prompt' as a string", f"add a 'prompt:' line or 'task: {TASKS[0]}'")
    if not any(entry.get(key) for key in _CHECKS):
        raise bad("has no check", f"add at least one of {list(_CHECKS)}")
    patterns = {key: _string_list(entry, key, bad) for key in ("must_match", "must_not_match")}
    for key, values in patterns.items():
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as error:
                raise bad(
                    f"'{key}' pattern {pattern!r} is not a valid regular expression ({error})",
                    "fix the pattern (YAML single quotes keep backslashes as written)",
                ) from None
    python_test = entry.get("python_test")
    if python_test is not None:
        if not isinstance(python_test, str):
            raise bad("has a 'python_test' that is not a string", "write it as a '|' block")
        try:
            compile(python_test, "behaviour_test.py", "exec")
        except SyntaxError as error:
            raise bad(
                f"has a 'python_test' that is not valid Python (line {error.lineno}: {error.msg})",
                "fix the test code",
            ) from None
    stop = _string_list(entry, "stop", bad)
    if any(not value for value in stop):
        raise bad("has an empty 'stop' string", "remove it: it would cut every generation")
    prepend_prompt = entry.get("prepend_prompt", False)
    if not isinstance(prepend_prompt, bool):
        raise bad("has a 'prepend_prompt' that is not true or false", "write true or false")
    timeout_s = entry.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise bad(f"has timeout_s {timeout_s!r}", "use a positive number of seconds")
    return BehaviourTest(
        name=entry["name"],
        prompt=entry.get("prompt"),
        task=task,
        must_match=patterns["must_match"],
        must_not_match=patterns["must_not_match"],
        python_test=python_test,
        prepend_prompt=prepend_prompt,
        stop=stop,
        timeout_s=float(timeout_s),
    )


def _task(entry: dict[str, Any], bad: Any) -> str | None:
    """The task whose generations the test checks (None: it has a prompt of its own)."""
    task = entry.get("task")
    if task is None:
        return None
    if task not in TASKS:
        raise bad(f"has task {task!r}", f"use one of {list(TASKS)} or a 'prompt:'")
    if "prompt" in entry:
        raise bad("has both 'prompt' and 'task'", "keep one: a task test has no prompt")
    if entry.get("python_test") is not None or entry.get("prepend_prompt"):
        raise bad("checks a task's messages with code", "use must_match/must_not_match")
    return task


def _string_list(entry: dict[str, Any], key: str, bad: Any) -> tuple[str, ...]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise bad(f"'{key}' must be a list of strings", f"write '{key}: [...]' or a '- ' list")
    return tuple(values)


# --- checking -----------------------------------------------------------------------------


def cut_at_stop(generation: str, stop: Iterable[str]) -> str:
    """``generation`` up to (not including) the earliest occurrence of any ``stop`` string."""
    end = len(generation)
    for marker in stop:
        found = generation.find(marker)
        if found != -1:
            end = min(end, found)
    return generation[:end]


def check(
    test: BehaviourTest,
    generation: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    allow_code_execution: bool = False,
    ended: bool = True,
) -> CheckResult:
    """Run ``test``'s checks on the model's ``generation`` (the text after the prompt);
    ``ended``: whether it ended by itself, not at the token limit (a pattern test fails one
    that did not).

    A python_test runs the generation only with ``allow_code_execution``; without it the
    result is :func:`~repotune.evaluate.sandbox.skipped` (after the regex checks pass).
    """
    if not ended and test.python_test is None:
        return CheckResult(False, NOT_ENDED)
    text = cut_at_stop(generation, test.stop)
    for pattern in test.must_match:
        if re.search(pattern, text) is None:
            return CheckResult(False, f"must_match {pattern!r} found nothing")
    for pattern in test.must_not_match:
        found = re.search(pattern, text)
        if found is not None:
            matched = found.group(0)[:80]
            return CheckResult(False, f"must_not_match {pattern!r} matched {matched!r}")
    if test.python_test is not None:
        if not allow_code_execution:
            return skipped()
        code = (test.prompt or "") + text if test.prepend_prompt else text
        return run_python_test(code, test.python_test, test.timeout_s, limits)
    return CheckResult(True, "ok")


def kind_of(test: BehaviourTest) -> str:
    """``python`` for a test that runs the generated code, ``pattern`` for one that only
    matches regular expressions: the report gives each kind its own pass rate."""
    return "python" if test.python_test is not None else "pattern"


def on_task(test: BehaviourTest) -> bool:
    """Whether ``test`` checks a task's generations (many diffs) rather than one prompt."""
    return test.task is not None


def sample_of(test: BehaviourTest) -> str:
    """``diffs`` for a test checked on the commit-message task's held-out diffs, ``single``
    for a test of one fixed prompt (one sample: no verdict)."""
    return "diffs" if on_task(test) else "single"


def check_answers(test: BehaviourTest, answers: Sequence[tuple[str, bool]]) -> list[CheckResult]:
    """``test`` checked on each ``(text, ended)`` answer of its task, in order."""
    return [check(test, text, ended=ended) for text, ended in answers]


def per_diff(results: Sequence[Sequence[CheckResult]]) -> list[CheckResult]:
    """One result per diff from every task test's results on it (``results[test][diff]``): a
    diff passes when its message passes them all, else the first failure is its reason. The
    pass rate over diffs is the one behaviour number with a sample behind it."""
    merged = []
    for column in zip(*results, strict=True):
        failed = next((result for result in column if not result.passed), None)
        merged.append(CheckResult(True, "ok") if failed is None else failed)
    return merged


def pass_rate(results: Sequence[CheckResult]) -> float | None:
    """The fraction of the ``results`` that ran that passed (skipped ones count for nothing);
    None (never NaN) when none ran."""
    ran = [result for result in results if not result.skipped]
    if not ran:
        return None
    return sum(result.passed for result in ran) / len(ran)
