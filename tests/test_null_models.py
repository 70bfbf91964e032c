"""Null models must never win: evaluation's verdicts cannot be fooled by an answer that knows
nothing about the question.

A real git history (130 commits to a small Python package, the last 60 held out) is extracted
and curated by the real stages; evaluation's own functions build its questions from the test
split (commit messages, code changes, FIM questions, the shipped behavioural tests) and the
tokenizer is the one the tiny preset trains. The answers come from the null models the report's
baselines use (:mod:`repotune.evaluate.null_models`: ``empty``, ``echo``, ``random``,
``other_reference``), given the very prompts, token budgets and stop strings the model gets
(:func:`repotune.evaluate.stage.task_prompts`), and the untrained base is the tiny preset's
randomly initialised model, answering through the stage's own generation. Evaluation's own
scoring, checks and verdicts (:func:`repotune.evaluate.stage.judge`) judge every pair.

No null model may be judged better than the untrained base, or than another null model, on any
metric or behavioural test. Text similarity and checks of form are won by null answers (an
echoed prompt, another commit's real answer), so the report keeps them exploratory (shown,
never judged, ``report.EXPLORATORY_METRICS``); a check of form is exploratory only because of
another commit's answer against the untrained base, so there its unadjusted test must still
not be won by the empty, echoed or random answer.

A check that cannot fail proves nothing, so: the split is large enough for verdicts (the real
answers are judged better than the untrained base on every judged metric, and would be on every
exploratory one), and planted bugs (a blank FIM middle that parses, a message cut at the token
limit that passes, a similarity metric given a verdict again) make it fail. Perplexity is not
generated text: both sides get the same scores there.
"""

import itertools
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from repotune.config import resolve_config
from repotune.curate.stage import CurateSettings, curate
from repotune.evaluate import behaviour_eval, fim, report
from repotune.evaluate.behaviour_eval import BEHAVIOUR
from repotune.evaluate.fim import FIM
from repotune.evaluate.fim_questions import FimQuestionSettings, build_fim_questions
from repotune.evaluate.null_models import NULL_MODELS, null_answers, references
from repotune.evaluate.perplexity import CommitScores
from repotune.evaluate.random_text import ended_answer
from repotune.evaluate.report import BETTER, EXPLORATORY, EXPLORATORY_METRICS, METRICS
from repotune.evaluate.stage import (
    EvaluateRequest,
    Judged,
    Questions,
    judge,
    null_baselines,
    questions,
    task_budgets,
    task_prompts,
    task_settings,
)
from repotune.evaluate.tasks import CODE_CHANGE, COMMIT_MESSAGE
from repotune.extract.stage import ExtractSettings, extract_to_parquet
from repotune.inference.budget import Budget, context_length
from repotune.inference.decoding import Generation, generate
from repotune.inference.prompts import Prompt
from repotune.inference.record import run_record
from repotune.modeling import build_model
from repotune.models import resolve_model
from repotune.shards.render import PLAIN
from repotune.shards.stage import TokenizeSettings, prepare_tokenizer
from repotune.shards.tokenizer import TextEncoder
from testdata.gitrepo import GitRepo

COMMITS, TEST_COMMITS = 130, 60
SEED = 0
SHIPPED_TESTS = Path(__file__).resolve().parent.parent / "config" / "behaviour_tests.yaml"
MODULES = ("io", "text", "maths", "net", "cli")
VERBS = ("load", "save", "parse", "render", "check", "merge", "split", "count", "clean", "sort")
NOUNS = ("config", "header", "table", "token", "path", "record", "batch", "entry", "user", "line")


# --- a history, its questions and the untrained base's answers ------------------------------


def body(arg: str, rng: random.Random) -> str:
    """A function body of two to four lines, sometimes guarded against empty input."""
    method = rng.choice(("strip()", "upper()", "split()", "copy()", "lower()", "count(0)"))
    name = rng.choice(("result", "out", "cleaned", "parts", "found"))
    guard = f"    if not {arg}:\n        return {rng.choice(('None', '[]', '0', 'False'))}\n"
    lines = f"    {name} = {arg}.{method}\n    return {name}\n"
    return (guard if rng.random() < 0.5 else "") + lines


def build_history(repo: GitRepo, rng: random.Random) -> None:
    """Commits that add a function, rewrite one's body or remove one, in five modules, with
    messages a person would write."""
    modules: dict[str, list[tuple[str, str, str]]] = {module: [] for module in MODULES}
    for number in range(COMMITS):
        module = rng.choice(MODULES)
        functions = modules[module]
        roll = rng.random()
        if len(functions) < 2 or roll < 0.3:
            noun = rng.choice(NOUNS)
            name = f"{rng.choice(VERBS)}_{noun}"
            if any(existing == name for existing, _, _ in functions):
                name = f"{name}_{number}"
            arg = rng.choice(("value", "items", "text", "data"))
            functions.insert(rng.randrange(len(functions) + 1), (name, arg, body(arg, rng)))
            message = rng.choice(
                [f"Add {name} to {module}", f"{module}: add {name}", f"Support {noun}s in {module}"]
            )
        elif roll < 0.92:
            index = rng.randrange(len(functions))
            name, arg, old = functions[index]
            new = old
            while set(new.splitlines()) & set(old.splitlines()):  # the whole body is new
                new = body(arg, rng)
            functions[index] = (name, arg, new)
            message = rng.choice(
                [f"Handle empty {arg} in {name}", f"Fix {name} on empty data", f"Simplify {name}"]
            ) + rng.choice(["", f"\n\n{name} failed when called with nothing.\n"])
        else:
            name, _, _ = functions.pop(rng.randrange(len(functions)))
            message = f"Remove unused {name}"
        code = "".join(f"def {name}({arg}):\n{lines}\n\n" for name, arg, lines in functions)
        repo.commit(message, {f"pkg/{module}.py": "import os\n\n\n" + code})


@dataclass
class Asked:
    """The questions of a held-out split and what answering them takes."""

    questions: Questions
    tokenizer: Any
    prompts: dict[str, list[Prompt]]
    budget: dict[str, Budget]
    untrained: dict[str, list[Generation]]


@pytest.fixture(scope="module")
def asked(tmp_path_factory: pytest.TempPathFactory) -> Asked:
    root = tmp_path_factory.mktemp("null-models")
    repo = GitRepo(root / "repo")
    build_history(repo, random.Random(SEED))
    config = resolve_config(
        {"curate": {"split": {"test_size": TEST_COMMITS, "validation_size": 5}}}
    )
    extract_to_parquet(
        repo.path, repo.head(), root / "commits.parquet", root / "extract.json",
        root / "cache.parquet", ExtractSettings.from_config(config["extract"]), threads=1,
    )  # fmt: skip
    splits = {name: root / f"{name}.parquet" for name in ("train", "validation", "test")}
    curate(
        root / "commits.parquet", splits, root / "curate.json",
        CurateSettings.from_config(config["curate"]),
    )  # fmt: skip
    spec = resolve_model("tiny")
    tokenize = TokenizeSettings.for_model(config["tokenize"], spec)
    tokenizer, template = prepare_tokenizer(spec, splits["train"], tokenize, fim=True)
    assert template is PLAIN
    settings = config["evaluate"]
    settings["generation"]["batch_size"] = 64  # one batch per task: the CPU's time is per step
    fim_path = root / "fim.parquet"
    build_fim_questions(
        repo.path, splits["test"], fim_path, root / "fim.json",
        FimQuestionSettings.from_config({
            "samples": settings["fim"]["samples"], "seed": settings["seed"],
            "max_file_bytes": config["snapshot"]["max_file_bytes"], "curate": config["curate"],
        }),
    )  # fmt: skip
    fields = dict.fromkeys(EvaluateRequest.__dataclass_fields__, "")
    request = EvaluateRequest(**fields | {
        "test_commits": str(splits["test"]), "behaviour_tests": str(SHIPPED_TESTS),
        "fim_questions": str(fim_path), "settings": settings,
    })  # fmt: skip
    record = run_record(template, tokenizer, tokenize.seq_len, fim_files=True)
    asked = questions(request, record, tokenizer)
    torch.manual_seed(SEED)
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    model = build_model(spec.settings["architecture"], len(tokenizer), tokenize.seq_len, special)
    context = context_length(model)
    budgets = task_budgets(settings, record, context, [COMMIT_MESSAGE, CODE_CHANGE, BEHAVIOUR, FIM])
    decoding = task_settings(settings, budgets)
    prompts = task_prompts(asked, record, tokenizer, budgets)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small decodes ~15x faster on one thread than on two
    try:
        untrained = {  # as the stage's run_generation asks a variant
            task: generate(model, tokenizer, task_prompts_, decoding[task])
            for task, task_prompts_ in prompts.items()
        }
    finally:
        torch.set_num_threads(threads)
    return Asked(
        questions=asked,
        tokenizer=tokenizer,
        prompts=prompts,
        budget=budgets,
        untrained=untrained,
    )


# --- the null models and the verdicts ---------------------------------------------------------


def encode(asked: Asked, text: str) -> list[int]:
    return TextEncoder(asked.tokenizer, ()).plain([text])[0]


def oracle(asked: Asked) -> dict[str, list[Generation]]:
    """Not a null model: the real answers, which must win (else no verdict is possible)."""
    answered = {}
    for task, prompts in asked.prompts.items():
        real = references(asked.questions, task, len(prompts))
        answered[task] = [
            ended_answer(
                asked.tokenizer,
                encode(asked, real[index]),
                asked.budget[task].new_tokens,
                prompt.stops,
            )
            for index, prompt in enumerate(prompts)
        ]
    return answered


def null(asked: Asked, name: str) -> dict[str, list[Generation]]:
    """Null model ``name``'s answers, as the stage's null baselines make them."""
    return null_answers(name, asked.questions, asked.prompts, asked.budget, asked.tokenizer, SEED)


def judged(
    asked: Asked, base: Mapping[str, list[Generation]], adapted: Mapping[str, list[Generation]]
) -> Judged:
    """Evaluation's verdicts on ``adapted`` against ``base``, perplexity held equal."""
    same = CommitScores(nll=[100.0] * TEST_COMMITS, tokens=[50] * TEST_COMMITS)
    generations = {"base": dict(base), "adapted": dict(adapted)}
    return judge(asked.questions, generations, {"base": same, "adapted": same}, SEED)


def entries(result: Judged) -> dict[str, dict[str, Any]]:
    """Every metric's entry and every behavioural test's, by name."""
    tests = {f"behaviour test {name}": entry for name, entry in result.task_tests.items()}
    return result.metrics | tests


def wins(result: Judged) -> set[str]:
    """Every metric and behavioural test on which the adapted side was judged better."""
    return {name for name, entry in entries(result).items() if entry["verdict"] == BETTER}


def unadjusted_wins(result: Judged, names: Collection[str] | None = None) -> set[str]:
    """The exploratory metrics and tests (or ``names`` of them) the adapted side would win if
    each were judged on its own p: what they can tell, though the report gives them no
    verdict."""
    return {
        name
        for name, entry in entries(result).items()
        if entry["role"] == EXPLORATORY
        and (names is None or name in names)
        and report.verdict(name if name in METRICS else PASS_RATE, entry, True, "p") == BETTER
    }


PASS_RATE = "behaviour.pass_rate"  # a behavioural test's entry is this metric's
GENERATED = [name for name in METRICS if METRICS[name].task != "perplexity"]
UNTRAINED = "untrained"
TEXT = {"commit_message.bnorm_bleu", "commit_message.rouge_l", "commit_message.edit_similarity",
        "code_change.edit_similarity", "fim.edit_similarity"}  # fmt: skip
# Checks of form: another commit's real answer passes them, nothing else may.
FORM_METRICS = EXPLORATORY_METRICS - TEXT


def form_checks(result: Judged) -> set[str]:
    """The checks of form among a result's metrics and tests."""
    return set(FORM_METRICS) | {f"behaviour test {name}" for name in result.task_tests}


def form_wins(result: Judged) -> set[str]:
    """The checks of form the adapted side would win on their own p."""
    return unadjusted_wins(result, form_checks(result))


def side(asked: Asked, name: str) -> dict[str, list[Generation]]:
    return asked.untrained if name == UNTRAINED else null(asked, name)


# --- the tests -------------------------------------------------------------------------------


def test_the_split_is_large_enough_for_the_real_answers_to_win(asked):
    questions = asked.questions
    assert questions.test_commits == TEST_COMMITS
    for items in (questions.commit_messages, questions.code_changes, questions.fim):
        assert len(items) >= 30
    result = judged(asked, asked.untrained, oracle(asked))
    judged_metrics = {name for name in GENERATED if name not in EXPLORATORY_METRICS}
    assert wins(result) == judged_metrics == {
        "commit_message.subject_exact_match", "code_change.exact_match", "fim.exact_match"
    }  # fmt: skip
    exploratory = {name for name, entry in entries(result).items() if entry["role"] == EXPLORATORY}
    assert (
        unadjusted_wins(result)
        == exploratory
        == EXPLORATORY_METRICS | {f"behaviour test {name}" for name in result.task_tests}
    )
    assert all(result.metrics[name]["interval"]["n"] >= 30 for name in GENERATED)


PAIRS = [(UNTRAINED, name) for name in NULL_MODELS] + list(itertools.permutations(NULL_MODELS, 2))


@pytest.mark.parametrize(("base", "adapted"), PAIRS)
def test_no_null_model_wins(asked, base, adapted):
    """No null model is judged better than the untrained base or another null model, on any
    metric or behavioural test; and but for another commit's real answer, none would beat the
    untrained base on a check of form even on its own p. (Against each other they can: random
    text passes 10 of the 60 diffs of three single pattern tests, an empty or echoed answer
    none, exact p = 0.002; which is why every check of form is exploratory.)"""
    result = judged(asked, side(asked, base), side(asked, adapted))
    assert wins(result) == set(), _scores(result)
    if base == UNTRAINED and adapted != "other_reference":
        assert form_wins(result) == set(), _scores(result)


def test_null_baselines_are_what_the_stage_scores_the_null_answers(asked):
    """report.json's null baselines: each null model's answers scored by the code that scores
    the models, for every generated metric; an empty answer matches and parses nothing."""
    baselines = null_baselines(asked.questions, asked.prompts, asked.budget, asked.tokenizer, SEED)
    assert set(baselines) == set(GENERATED)
    for name in NULL_MODELS:
        answers = null(asked, name)
        scored = judged(asked, answers, answers).metrics
        assert {metric: baselines[metric][name] for metric in GENERATED} == {
            metric: scored[metric]["base"] for metric in GENERATED
        }
    empty = {metric: values["empty"] for metric, values in baselines.items()}
    assert empty["fim.parses"] == empty["fim.exact_match"] == empty["code_change.exact_match"] == 0
    assert baselines["commit_message.rouge_l"]["other_reference"] > 0  # why it is exploratory


def _scores(result: Judged) -> dict[str, Any]:
    """What each side scored, for a failure's message."""
    return {
        name: (entry["base"], entry["adapted"], entry["interval"] and entry["interval"]["delta"])
        for name, entry in entries(result).items()
    }


def _blank_parses(task: fim.FimTask, middle: str) -> bool | None:
    """``parses`` before it was fixed: on every question whose file parses, a blank middle
    counted as parsing."""
    if task.language != "python" or not fim._parses(task.prefix + task.middle + task.suffix):
        return None
    return fim._parses(task.prefix + middle + task.suffix)


def _never_cut(generations: Sequence[Generation]) -> list[tuple[str, bool]]:
    """Every answer taken as ended, cut at the token limit or not."""
    return [(generation.text, True) for generation in generations]


def _judge_similarity() -> frozenset[str]:
    """The exploratory metrics without text similarity: similarity judged again."""
    return EXPLORATORY_METRICS - TEXT


PLANTED: dict[str, tuple[Any, str, Any, str, Callable[[Judged], set[str]], set[str]]] = {
    "a blank FIM middle parses": (
        fim, "parses", _blank_parses, "empty", form_wins, {"fim.parses"},
    ),
    "a message cut at the token limit passes": (
        behaviour_eval, "ended", _never_cut, "echo", form_wins,
        {"behaviour test commit-message-has-a-subject",
         "behaviour test commit-subject-no-trailing-period",
         "behaviour test commit-subject-at-most-72-characters"},
    ),
    "a similarity metric gets a verdict again": (
        report, "EXPLORATORY_METRICS", _judge_similarity(), "other_reference", wins,
        {"commit_message.bnorm_bleu", "commit_message.rouge_l", "commit_message.edit_similarity",
         "code_change.edit_similarity", "fim.edit_similarity"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("bug", PLANTED)
def test_a_planted_bug_lets_a_null_model_win(asked, monkeypatch, bug):
    module, name, planted, model, found, won = PLANTED[bug]
    monkeypatch.setattr(module, name, planted)
    assert found(judged(asked, asked.untrained, null(asked, model))) == won
