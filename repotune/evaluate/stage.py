"""The evaluate stage: does the adapter know this repository better than its base model?

Every metric is measured twice on the same held-out (time-split ``test``) data: with the
adapter switched off (the base model, exactly the weights training started from) and with it on.
One model is loaded; peft's ``disable_adapter()`` gives the base, so both see the same weights,
dtype and quantization. A run, in order:

1. **perplexity** on the test shards (:mod:`repotune.evaluate.perplexity`);
2. **generation** for every question, base then adapted, through the one batched
   :func:`repotune.inference.decoding.generate`: commit messages and code changes from a
   seeded sample of test commits (:mod:`repotune.evaluate.tasks`), the fill-in-the-middle
   questions rule ``fim_questions`` built from test commits' post-images
   (:mod:`repotune.evaluate.fim`), and the behavioural tests' prompts. Every prompt is built
   by :mod:`repotune.inference` within the budget ``repotune suggest`` and ``complete`` use,
   from the run record tokenize wrote (:class:`repotune.inference.record.RunRecord`);
3. **behavioural checks** once all generation is done: they start sandboxed child processes,
   which is best done while no torch work is in flight;
4. **scores** (:mod:`repotune.evaluate.metrics`) and the **report**
   (:mod:`repotune.evaluate.report`).

Steps 3 and 4 are :func:`judge`: generations in, every score, check and verdict out. It is
the one seam between the model and the report, so tests plug answers of their own in there
(tests/test_null_models.py: a model that answers nothing, echoes, or writes random text must
never win). The same scoring code scores four null models' answers (:func:`null_baselines`,
no model needed), which the report prints beside the metrics.
"""

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repotune.adapter_files import BASE_FILE, SUMMARY_FILE
from repotune.atomic import write_text
from repotune.curate.redact import Redactor, RedactSettings
from repotune.errors import InputError
from repotune.evaluate import report
from repotune.evaluate import tasks as eval_tasks
from repotune.evaluate.behaviour import (
    BehaviourTest,
    CheckResult,
    load_tests,
    pass_rate,
    per_diff,
)
from repotune.evaluate.behaviour_eval import (
    BEHAVIOUR,
    behaviour_by_kind,
    behaviour_results,
    behaviour_rows,
    fixed_prompt,
    random_baselines,
    task_results,
    task_test_entries,
)
from repotune.evaluate.fim import (
    FIM,
    FIM_METRICS,
    by_metric,
    fim_facts,
    fim_item_scores,
    fim_prompts,
    score_fim,
)
from repotune.evaluate.fim_questions import read_fim_questions
from repotune.evaluate.fim_tasks import FimTask
from repotune.evaluate.metrics import mean
from repotune.evaluate.null_models import NULL_MODELS, null_answers
from repotune.evaluate.perplexity import CommitScores, block_scores, document_commits
from repotune.evaluate.sandbox import DEFAULT_LIMITS, SandboxLimits, chosen_isolation
from repotune.evaluate.significance import paired_ratio
from repotune.evaluate.tasks import CODE_CHANGE, COMMIT_MESSAGE, Example
from repotune.inference.budget import Budget, budget, context_length
from repotune.inference.decoding import FINISH_REASONS, Generation, GenerationSettings, generate
from repotune.inference.prompts import Prompt, prompt_encoder, text_prompt
from repotune.inference.record import RunRecord
from repotune.modeling import load_adapted
from repotune.shards.torch_blocks import load_blocks

log = logging.getLogger("repotune.evaluate")
VARIANTS = report.VARIANTS
TRAINING_KEYS = (
    "steps", "epochs", "blocks_drawn", "train_blocks", "tokens", "train_tokens",
    "final_train_loss", "final_val_loss", "best_val_loss", "best_step", "adapter",
    "tokens_per_s", "train_seconds", "trainable_params", "quantization", "dtype", "base_training",
)  # fmt: skip


@dataclass(frozen=True)
class EvaluateRequest:
    """The stage's inputs and outputs (paths), the ``evaluate:`` config section and the
    ``curate.redact`` section (generations are redacted like training data before written)."""

    model: str
    adapter_dir: str
    base_dir: str
    tokenizer_dir: str
    test_shards: str
    shard_stats: str
    test_commits: str
    behaviour_tests: str | None
    report_json: str
    report_md: str
    generations: str
    loss_plot: str
    metrics_plot: str
    settings: Mapping[str, Any]
    redact: Mapping[str, Any]
    fim_questions: str | None = None  # results/fim/questions.parquet; None: FIM not evaluated


@dataclass
class Questions:
    """Everything the models are asked, by task."""

    commit_messages: list[Example]
    code_changes: list[Example]
    behaviour: list[BehaviourTest]
    test_commits: int
    fim: list[FimTask] = field(default_factory=list)


def pick_device(setting: str) -> str:
    """``auto``: the first CUDA GPU when there is one, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise InputError("config evaluate.device", "is cuda but no GPU is visible", "use auto")
    return setting


@contextlib.contextmanager
def variant(model: PeftModel, name: str) -> Iterator[None]:
    """The base model (adapter layers bypassed) or the adapted one."""
    if name == "base":
        with model.disable_adapter():
            yield
    else:
        yield


def generation_settings(settings: Mapping[str, Any], max_new_tokens: int) -> GenerationSettings:
    """Decoding settings of one task: the shared ``generation`` section and its new tokens."""
    section = settings["generation"]
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        batch_size=section["batch_size"],
        do_sample=section["do_sample"],
        temperature=section["temperature"],
        top_p=section["top_p"],
        seed=settings["seed"],
    )


TASK_SECTIONS = {
    COMMIT_MESSAGE: "commit_messages",
    CODE_CHANGE: "code_changes",
    BEHAVIOUR: "behaviour",
    FIM: "fim",
}


def task_budgets(
    settings: Mapping[str, Any], record: RunRecord, context: int | None, tasks: Sequence[str]
) -> dict[str, Budget]:
    """Each task's prompt and new-token budget: its ``max_new_tokens`` setting within the
    run's prompt budget and the model's context, exactly as ``suggest``/``complete`` fit
    theirs (:func:`repotune.inference.budget.budget`)."""
    budgets = {}
    for task in tasks:
        wanted = settings[TASK_SECTIONS[task]]["max_new_tokens"]
        budgets[task] = budget(record, wanted, context)
        if budgets[task].new_tokens < wanted:
            log.warning(
                "%s: the model's context of %s tokens allows %d new tokens, not %d, after a "
                "prompt of at most %d",
                task, context, budgets[task].new_tokens, wanted, budgets[task].prompt_tokens,
            )  # fmt: skip
    return budgets


def task_settings(
    settings: Mapping[str, Any], budgets: Mapping[str, Budget]
) -> dict[str, GenerationSettings]:
    """Each generated task's decoding settings, its new tokens within its budget."""
    return {task: generation_settings(settings, b.new_tokens) for task, b in budgets.items()}


def questions(
    request: EvaluateRequest, record: RunRecord, tokenizer: PreTrainedTokenizerBase
) -> Questions:
    """The sampled commit-message and code-change examples and the behavioural tests."""
    settings = request.settings
    encoder = prompt_encoder(tokenizer, record)
    path, seed = request.test_commits, settings["seed"]
    total = eval_tasks.count_commits(path)
    drawn = eval_tasks.sample_indices(total, settings["commit_messages"]["samples"], seed)
    chosen = eval_tasks.read_commits(path, drawn)
    tests = load_tests(request.behaviour_tests) if request.behaviour_tests else []
    return Questions(
        commit_messages=eval_tasks.commit_message_examples(chosen, record, encoder),
        code_changes=eval_tasks.sampled_code_changes(
            path, record, seed, settings["code_changes"]["samples"], encoder
        ),
        behaviour=tests,
        test_commits=total,
        fim=read_fim_questions(request.fim_questions) if request.fim_questions else [],
    )


def task_prompts(
    asked: Questions,
    record: RunRecord,
    tokenizer: PreTrainedTokenizerBase,
    budgets: Mapping[str, Budget],
) -> dict[str, list[Prompt]]:
    """The prompts of every task ``budgets`` holds, each question within its task's budget."""
    encoder = prompt_encoder(tokenizer, record)

    def examples(chosen: Sequence[Example]) -> Callable[[int], list[Prompt]]:
        return lambda limit: [eval_tasks.example_prompt(e, record, encoder, limit) for e in chosen]

    builders: dict[str, Callable[[int], list[Prompt]]] = {
        COMMIT_MESSAGE: examples(asked.commit_messages),
        CODE_CHANGE: examples(asked.code_changes),
        BEHAVIOUR: lambda limit: [
            text_prompt(test.prompt, encoder, (*record.stops, *test.stop), limit)
            for test in fixed_prompt(asked.behaviour)
        ],
        FIM: lambda limit: fim_prompts(asked.fim, record, tokenizer, limit),
    }
    return {task: builders[task](limits.prompt_tokens) for task, limits in budgets.items()}


def run_generation(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Mapping[str, Sequence[Prompt]],
    decoding: Mapping[str, GenerationSettings],
) -> tuple[dict[str, dict[str, list[Generation]]], dict[str, dict[str, float]]]:
    """Generations by variant and task, and each variant's generation time and token count."""
    generations: dict[str, dict[str, list[Generation]]] = {}
    timing: dict[str, dict[str, float]] = {}
    for name in VARIANTS:
        started = time.perf_counter()
        generations[name] = {}
        with variant(model, name):
            for task, asked in prompts.items():
                generations[name][task] = generate(
                    model, tokenizer, asked, decoding[task], desc=f"{task} ({name})"
                )
        seconds = time.perf_counter() - started
        tokens = sum(g.new_tokens for task in generations[name].values() for g in task)
        timing[name] = {
            "seconds": round(seconds, 3),
            "new_tokens": tokens,
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        }
        log.info("generation (%s): %s", name, timing[name])
    return generations, timing


def task_scores(
    task: str,
    examples: Sequence[Example],
    generations: Mapping[str, Mapping[str, Sequence[Generation]]],
) -> dict[str, dict[str, list[float]]]:
    """Each variant's per-example scores on one generated task, metric by metric (the same
    examples in the same order for both variants: the bootstrap pairs them)."""
    return {
        name: eval_tasks.pair_scores(
            task,
            [
                (eval_tasks.answer(task, generation.text), example.reference)
                for example, generation in zip(examples, generations[name][task], strict=True)
            ],
        )
        for name in VARIANTS
    }


def metrics_table(
    ppl: Mapping[str, CommitScores],
    message: Mapping[str, Mapping[str, Sequence[float]]],
    code: Mapping[str, Mapping[str, Sequence[float]]],
    checks: Mapping[str, Sequence[CheckResult]],
    seed: int,
    test_commits: int,
    fim: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    commits: Mapping[str, Sequence[str]] | None = None,
    primary: str = report.DEFAULT_PRIMARY,
) -> dict[str, dict[str, Any]]:
    """``report.json``'s ``metrics``: every metric, base and adapted, delta, sample size, 95%
    paired BCa intervals (seeded with ``seed``), p, role and verdict
    (:func:`report.assign_verdicts`: ``primary`` judged alone, secondaries Holm-adjusted,
    exploratory ones never judged).

    Everything is resampled by commit: perplexity's per-commit sums token-weighted, and a
    generated task's items by ``commits[key]``, the commit of each item (``key``: the metric,
    e.g. ``fim.parses``, or its task, e.g. ``fim``; a task without an entry resamples its
    items one by one). Verdicts on the test split's metrics need ``test_commits`` to be large
    enough.
    """
    commits = commits or {}
    enough = report.enough_test_commits(test_commits)
    base_ppl, adapted_ppl = ppl["base"], ppl["adapted"]
    if base_ppl.shas != adapted_ppl.shas or base_ppl.tokens != adapted_ppl.tokens:
        raise ValueError("base and adapted perplexity were not scored on the same commits")
    summary = {name: ppl[name].summary() for name in VARIANTS}
    transforms = {"bits_per_token": lambda loss: loss / math.log(2), "perplexity": np.exp}
    intervals = {
        name: paired_ratio(base_ppl.nll, adapted_ppl.nll, adapted_ppl.tokens, transform, seed)
        for name, transform in transforms.items()
    }
    loss_test = intervals["bits_per_token"]  # one measurement, one p: the loss's
    table = {
        name: report.metric_entry(
            name,
            getattr(summary["base"], name),
            getattr(summary["adapted"], name),
            summary["adapted"].tokens,
            intervals[name],
            enough,
            p=None if loss_test is None else loss_test.p,
        )
        for name in ("perplexity", "bits_per_token")
    }
    generated = [("commit_message", message), ("code_change", code)]
    for prefix, scores in [*generated, *([(FIM, fim)] if fim is not None else [])]:
        for key, base_values in scores["base"].items():
            name = f"{prefix}.{key}"
            table[name] = report.scored_entry(
                name,
                base_values,
                scores["adapted"][key],
                seed,
                commits.get(name, commits.get(prefix)),
                enough,
            )
    both = [
        index
        for index, (base, adapted) in enumerate(zip(checks["base"], checks["adapted"], strict=True))
        if ran(base) and ran(adapted)
    ]
    passed = {name: [float(checks[name][index].passed) for index in both] for name in VARIANTS}
    behaviour_commits = commits.get(BEHAVIOUR)
    table["behaviour.pass_rate"] = report.scored_entry(
        "behaviour.pass_rate",
        passed["base"],
        passed["adapted"],
        seed,
        None if behaviour_commits is None else [behaviour_commits[index] for index in both],
        enough,
    )
    return report.assign_verdicts(table, primary, enough)


def item_commits(asked: Questions) -> dict[str, list[str]]:
    """The commit of every scored item, by task (and by FIM metric: ``parses`` scores only
    the questions :func:`repotune.evaluate.fim.score_fim` measures it on, a property of the
    question alone; ``behaviour``: the diffs of the commit-message task the task tests check),
    for :func:`metrics_table` to resample commits."""
    found = {
        COMMIT_MESSAGE: [example.sha for example in asked.commit_messages],
        CODE_CHANGE: [example.sha for example in asked.code_changes],
    }
    found[BEHAVIOUR] = found[COMMIT_MESSAGE]  # the task tests check the commit messages
    measured = [(task, score_fim(task, task.middle)) for task in asked.fim]
    for metric in FIM_METRICS:
        found[f"{FIM}.{metric}"] = [task.sha for task, row in measured if row[metric] is not None]
    return found


@dataclass
class Judged:
    """Everything scored from one pair of generations: the metrics table, the fixed-prompt
    tests' results (``checks``), the task tests' results per diff (``on_diffs``, ``[test]
    [diff]`` per variant) with each task test's entry (``task_tests``, by name), and the FIM
    facts (None when FIM was not asked)."""

    metrics: dict[str, dict[str, Any]]
    checks: dict[str, list[CheckResult]]
    on_diffs: dict[str, list[list[CheckResult]]]
    task_tests: dict[str, dict[str, Any]]
    fim: dict[str, Any] | None
    scored: "Scored"


@dataclass
class Scored:
    """Each variant's per-item scores of the generated tasks: what :func:`metrics_table`
    judges and :func:`null_baselines` averages; ``fim_items`` holds each FIM question's
    scores in question order (``fim`` is them by metric)."""

    message: dict[str, dict[str, list[float]]]
    code: dict[str, dict[str, list[float]]]
    fim: dict[str, dict[str, list[float]]] | None
    fim_items: dict[str, list[dict[str, float | None]]] | None
    diffs: dict[str, list[CheckResult]]  # per diff: passes every task test
    on_diffs: dict[str, list[list[CheckResult]]]


def score_generations(
    asked: Questions, generations: Mapping[str, Mapping[str, Sequence[Generation]]]
) -> Scored:
    """Both variants' answers to the generated tasks scored item by item: messages, code
    changes, FIM (when asked) and the task tests on every commit message."""
    on_diffs = task_results(asked.behaviour, generations)
    fim_items = None
    if FIM in generations["base"]:
        texts = {name: [g.text for g in generations[name][FIM]] for name in VARIANTS}
        fim_items = fim_item_scores(asked.fim, texts)
    return Scored(
        message=task_scores(COMMIT_MESSAGE, asked.commit_messages, generations),
        code=task_scores(CODE_CHANGE, asked.code_changes, generations),
        fim=None if fim_items is None else by_metric(fim_items),
        fim_items=fim_items,
        diffs={name: per_diff(on_diffs[name]) for name in VARIANTS},
        on_diffs=on_diffs,
    )


def judge(
    asked: Questions,
    generations: Mapping[str, Mapping[str, list[Generation]]],
    ppl: Mapping[str, CommitScores],
    seed: int,
    allow_code_execution: bool = False,
    primary: str = report.DEFAULT_PRIMARY,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> Judged:
    """Score both variants' generations of every question: tasks, FIM, behavioural checks
    and the metrics table with its roles and verdicts (``primary``: the primary metric).
    Every item is resampled with its commit (:func:`item_commits`). ``behaviour.pass_rate`` is
    over the diffs the task tests check (a diff passes when its message passes them all);
    fixed-prompt tests are single samples, reported per test only."""
    scored = score_generations(asked, generations)
    commits = item_commits(asked)
    facts = None
    if scored.fim is not None:
        texts = {name: [g.text for g in generations[name][FIM]] for name in VARIANTS}
        facts = fim_facts(asked.fim, texts)
    metrics = metrics_table(
        ppl, scored.message, scored.code, scored.diffs, seed, asked.test_commits, scored.fim,
        commits, primary,
    )  # fmt: skip
    return Judged(
        metrics=metrics,
        checks=behaviour_results(asked.behaviour, generations, allow_code_execution, limits),
        on_diffs=scored.on_diffs,
        task_tests=task_test_entries(
            asked.behaviour, scored.on_diffs, seed, asked.test_commits, commits[BEHAVIOUR], primary
        ),
        fim=facts,
        scored=scored,
    )


def null_baselines(
    asked: Questions,
    prompts: Mapping[str, Sequence[Prompt]],
    budgets: Mapping[str, Budget],
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
) -> dict[str, dict[str, float | None]]:
    """report.json's ``null_baselines``: every generated metric's value on each null model's
    answers (:mod:`repotune.evaluate.null_models`; ``prompts`` as :func:`task_prompts` gives
    them, within each task's ``budgets``), scored by :func:`score_generations`, the code that
    scores the models. ``{metric: {null model: value}}``."""
    table: dict[str, dict[str, float | None]] = {}
    for model in NULL_MODELS:
        answers = null_answers(model, asked, prompts, budgets, tokenizer, seed)
        scored = score_generations(asked, {name: answers for name in VARIANTS})
        tasks = [(COMMIT_MESSAGE, scored.message), (CODE_CHANGE, scored.code)]
        for prefix, scores in [*tasks, *([(FIM, scored.fim)] if scored.fim is not None else [])]:
            for key, values in scores["base"].items():
                table.setdefault(f"{prefix}.{key}", {})[model] = mean(values)
        table.setdefault("behaviour.pass_rate", {})[model] = pass_rate(scored.diffs["base"])
    return table


def ran(result: CheckResult) -> bool:
    """Whether a check ran: the sandbox reports a python test it may not run (code execution
    off) as ``skipped``, which is neither a pass nor a failure. The pass rate compares the two
    variants on the tests that ran for both."""
    return not getattr(result, "skipped", False)


def _generation_facts(
    generations: Mapping[str, Mapping[str, list[Generation]]], budgets: Mapping[str, Budget]
) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for task, limits in budgets.items():
        facts[task] = {
            "max_new_tokens": limits.new_tokens,
            "max_prompt_tokens": limits.prompt_tokens,
            **{
                name: {
                    "truncated_prompts": sum(g.truncated for g in generations[name][task]),
                    "finish": dict.fromkeys(FINISH_REASONS, 0)
                    | dict(Counter(g.finish for g in generations[name][task])),
                }
                for name in VARIANTS
            },
        }
    return facts


def redacted(
    generations: Mapping[str, Mapping[str, list[Generation]]], redactor: Redactor
) -> dict[str, dict[str, list[Generation]]]:
    """The generations with their text redacted as training data is (``curate.redact``): what
    report.json, report.md and generations.jsonl show. Scores and checks use the raw text."""
    return {
        name: {
            task: [dataclasses.replace(g, text=redactor.redact(g.text)) for g in rows]
            for task, rows in tasks.items()
        }
        for name, tasks in generations.items()
    }


def _examples(
    asked: Questions,
    generations: Mapping[str, Mapping[str, list[Generation]]],
    count: int,
) -> list[dict[str, str]]:
    return [
        {
            "sha": example.sha,
            "reference": example.reference,
            **{name: generations[name][COMMIT_MESSAGE][index].text for name in VARIANTS},
        }
        for index, example in enumerate(asked.commit_messages[:count])
    ]


def _answered(
    row: dict[str, Any],
    generations: Mapping[str, Mapping[str, list[Generation]]],
    task: str,
    index: int,
) -> dict[str, Any]:
    """``row`` with each variant's text and finish reason for question ``index`` of ``task``."""
    for name in VARIANTS:
        generation = generations[name][task][index]
        row[name] = generation.text
        row[f"{name}_finish"] = generation.finish
    return row


def _item_scores(scored: Scored | None, task: str, index: int) -> dict[str, Any]:
    """``{"scores": {variant: {metric: score}}}`` of question ``index`` of ``task`` (what the
    report averaged, from the raw answers), or nothing without ``scored``."""
    if scored is None:
        return {}
    if task == FIM:
        assert scored.fim_items is not None
        return {"scores": {name: scored.fim_items[name][index] for name in VARIANTS}}
    by_task = scored.message if task == COMMIT_MESSAGE else scored.code
    return {
        "scores": {
            name: {metric: values[index] for metric, values in by_task[name].items()}
            for name in VARIANTS
        }
    }


def _generation_rows(
    asked: Questions,
    generations: Mapping[str, Mapping[str, list[Generation]]],
    scored: Scored | None = None,
) -> Iterator[dict[str, Any]]:
    """generations.jsonl's rows (pass :func:`redacted` generations), each question's scores
    with them when ``scored`` is given."""
    for task, examples in (
        (COMMIT_MESSAGE, asked.commit_messages),
        (CODE_CHANGE, asked.code_changes),
    ):
        for index, example in enumerate(examples):
            row = {"task": task, "sha": example.sha, "reference": example.reference}
            yield _answered(row, generations, task, index) | _item_scores(scored, task, index)
    for index, fim_task in enumerate(asked.fim if FIM in generations["base"] else []):
        row = {
            "task": FIM,
            "sha": fim_task.sha,
            "path": fim_task.path,
            "reference": fim_task.middle,
        }
        yield _answered(row, generations, FIM, index) | _item_scores(scored, FIM, index)
    for index, test in enumerate(fixed_prompt(asked.behaviour)):
        row = {"task": BEHAVIOUR, "name": test.name, "reference": None}
        yield _answered(row, generations, BEHAVIOUR, index)


def training_facts(adapter_dir: str | Path) -> dict[str, Any]:
    """The training summary's headline numbers (steps, tokens, final losses, tokens/s)."""
    path = Path(adapter_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(str(path), f"cannot be read ({error})", "rerun the train rule") from None
    return {key: summary.get(key) for key in TRAINING_KEYS} | {"base_model": summary["base_model"]}


def base_facts(base_dir: str | Path) -> dict[str, Any]:
    """What the base is (``base.json``: built from config, or a pretrained id), described."""
    path = Path(base_dir) / BASE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(str(path), f"cannot be read ({error})", "rerun the train rule") from None
    facts = {key: record[key] for key in ("source", "name", "id") if key in record}
    return facts | {"description": report.describe_base(record)}


def evaluate(request: EvaluateRequest) -> dict[str, Any]:
    """Run the stage; writes every output and returns the report (report.json's content)."""
    started = time.perf_counter()
    settings = request.settings
    torch.manual_seed(settings["seed"])
    training = training_facts(request.adapter_dir)
    base = base_facts(request.base_dir)
    redactor = Redactor(RedactSettings.from_config(dict(request.redact)))
    record = RunRecord.read(request.shard_stats)
    tokenizer = AutoTokenizer.from_pretrained(request.tokenizer_dir)
    asked = questions(request, record, tokenizer)
    allow_code = settings["behaviour"]["allow_code_execution"]
    limits = SandboxLimits.from_config(settings["behaviour"])
    if allow_code and any(test.python_test for test in asked.behaviour):
        chosen_isolation(limits)  # refuses in one line, before any model loads
    blocks = load_blocks(request.test_shards)
    documents = document_commits(request.test_shards)
    device = pick_device(settings["device"])
    model = load_adapted(request.adapter_dir, device=device)
    log.info(
        "evaluating %s on %s: %d test blocks, %d commit messages, %d code changes, "
        "%d FIM questions, %d tests",
        request.model, device, len(blocks), len(asked.commit_messages),
        len(asked.code_changes), len(asked.fim), len(asked.behaviour),
    )  # fmt: skip
    section = settings["perplexity"]
    ppl: dict[str, CommitScores] = {}
    for name in VARIANTS:
        with variant(model, name):
            ppl[name] = block_scores(
                model, blocks, documents, section["batch_size"], section["max_blocks"],
                f"perplexity ({name})",
            )  # fmt: skip
        log.info("perplexity (%s): %s", name, ppl[name].summary().as_dict())
    context = context_length(model)
    tasks = [COMMIT_MESSAGE, CODE_CHANGE, BEHAVIOUR, *([FIM] if request.fim_questions else [])]
    budgets = task_budgets(settings, record, context, tasks)
    prompts = task_prompts(asked, record, tokenizer, budgets)
    generations, timing = run_generation(
        model, tokenizer, prompts, task_settings(settings, budgets)
    )
    del model
    judged = judge(
        asked, generations, ppl, settings["seed"], allow_code, settings["primary_metric"], limits
    )
    random = random_baselines(asked.behaviour, tokenizer, record.stops, budgets, settings["seed"])
    nulls = null_baselines(asked, prompts, budgets, tokenizer, settings["seed"])
    shown = redacted(generations, redactor)
    result = {
        "model": request.model,
        "base_model": training.pop("base_model"),
        "base": base,
        "adapter": request.adapter_dir,
        "template": record.template_name,
        "device": device,
        "samples": {
            "test_commits": asked.test_commits,
            "min_test_commits": report.MIN_SAMPLE,
            "enough_test_commits": report.enough_test_commits(asked.test_commits),
            "perplexity_blocks": ppl["adapted"].blocks,
            "perplexity_commits": len(ppl["adapted"].nll),
            "perplexity_tokens": sum(ppl["adapted"].tokens),
            "commit_messages": len(asked.commit_messages),
            "code_changes": len(asked.code_changes),
            "fim_questions": len(asked.fim),
            "behaviour_tests": len(asked.behaviour),
        },
        "primary_metric": settings["primary_metric"],
        "metrics": judged.metrics,
        "null_baselines": nulls,
        "fim": {
            "evaluated": FIM in prompts,
            "format": record.fim_name,
            "python_questions": sum(task.language == "python" for task in asked.fim),
            **(judged.fim or {}),
        },
        "perplexity": {name: ppl[name].summary().as_dict() for name in VARIANTS},
        "perplexity_by_commit": {
            "sha": ppl["adapted"].shas,
            "tokens": ppl["adapted"].tokens,
            **{f"{name}_nll": ppl[name].nll for name in VARIANTS},
        },
        "behaviour": behaviour_rows(
            asked.behaviour, judged.checks, redactor, judged.on_diffs, judged.task_tests, random
        ),
        "behaviour_by_kind": behaviour_by_kind(asked.behaviour, judged.checks, judged.on_diffs),
        "generation": {
            "do_sample": settings["generation"]["do_sample"],
            "context_length": context,
            "tasks": _generation_facts(generations, budgets),
            "timing": timing,
        },
        "examples": _examples(asked, shown, settings["examples"]),
        "training": training,
        "settings": dict(settings),
    }
    rows = list(_generation_rows(asked, shown, judged.scored))
    result["redactions"] = {kind: n for kind, n in redactor.counts.items() if n}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(request, result, rows)
    return result


def write_outputs(
    request: EvaluateRequest, result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """report.json, generations.jsonl (``rows``, redacted), the two plots and report.md, each
    written atomically."""
    write_text(request.report_json, json.dumps(result, indent=2) + "\n")
    lines = (json.dumps(row, ensure_ascii=False) for row in rows)
    write_text(request.generations, "".join(f"{line}\n" for line in lines))
    log_path = Path(request.adapter_dir) / "training_log.csv"
    report.plot_loss_curves(report.read_training_log(log_path), request.loss_plot)
    report.plot_metrics(
        result["metrics"], request.metrics_plot, f"{request.model}: base vs base + adapter"
    )
    report.write_markdown(result, request.report_md, request.loss_plot, request.metrics_plot)
