"""The evaluate stage: does the adapter know this repository better than its base model?

Every metric is measured twice on the same held-out (time-split ``test``) data: with the
adapter switched off (the base model, exactly the weights training started from) and with it on.
One model is loaded; peft's ``disable_adapter()`` gives the base, so both see the same weights,
dtype and quantization. A run, in order:

1. **perplexity** on the test shards (:mod:`repotune.evaluate.perplexity`);
2. **generation** for every question, base then adapted, through the one batched
   :func:`repotune.evaluate.generation.generate`: commit messages and code changes from a
   seeded sample of test commits (:mod:`repotune.evaluate.tasks`), the fill-in-the-middle
   questions rule ``fim_questions`` built from test commits' post-images
   (:mod:`repotune.evaluate.fim`), and the behavioural tests' prompts;
3. **behavioural checks** once all generation is done: they start sandboxed child processes,
   which is best done while no torch work is in flight;
4. **scores** (:mod:`repotune.evaluate.metrics`) and the **report**
   (:mod:`repotune.evaluate.report`).
"""

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repotune.atomic import write_text
from repotune.curate.redact import Redactor, RedactSettings
from repotune.errors import InputError
from repotune.evaluate import report
from repotune.evaluate import tasks as eval_tasks
from repotune.evaluate.behaviour import (
    BehaviourTest,
    CheckResult,
    check,
    kind_of,
    load_tests,
    pass_rate,
)
from repotune.evaluate.fim import FIM, fim_format, fim_prompts, fim_scores
from repotune.evaluate.fim_prompt import block_budget
from repotune.evaluate.fim_questions import read_fim_questions
from repotune.evaluate.fim_tasks import FimTask
from repotune.evaluate.generation import (
    FINISH_REASONS,
    Generation,
    GenerationSettings,
    budgets,
    context_length,
    generate,
)
from repotune.evaluate.metrics import mean
from repotune.evaluate.perplexity import BlockScores, block_scores
from repotune.evaluate.sandbox import chosen_isolation
from repotune.evaluate.significance import paired_means, paired_ratio
from repotune.evaluate.tasks import CODE_CHANGE, CODE_STOP, COMMIT_MESSAGE, Example
from repotune.modeling import BASE_FILE, SUMMARY_FILE, load_adapted
from repotune.shards.fim import FimFormat, trained_fim_format
from repotune.shards.render import Template, get_template
from repotune.shards.tokenizer import TextEncoder
from repotune.shards.torch_blocks import load_blocks

log = logging.getLogger("repotune.evaluate")
VARIANTS = report.VARIANTS
BEHAVIOUR = "behaviour"
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


def template_of(stats_path: str | Path) -> Template:
    """The template the tokenize stage actually used (stats.json records it)."""
    stats = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    return get_template(stats["template"]["name"])


def fim_training(stats_path: str | Path) -> tuple[int, FimFormat | None]:
    """The training block length (FIM prompts stay within it) and the format of the FIM
    documents tokenize made (None: none), from stats.json."""
    stats = json.loads(Path(stats_path).read_text(encoding="utf-8"))
    return int(stats["seq_len"]), trained_fim_format(stats)


@contextlib.contextmanager
def variant(model: PeftModel, name: str) -> Iterator[None]:
    """The base model (adapter layers bypassed) or the adapted one."""
    if name == "base":
        with model.disable_adapter():
            yield
    else:
        yield


def generation_settings(settings: Mapping[str, Any], max_new_tokens: int) -> GenerationSettings:
    """Decoding settings of one task: the shared ``generation`` section and its budget."""
    section = settings["generation"]
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=section["max_prompt_tokens"],
        batch_size=section["batch_size"],
        do_sample=section["do_sample"],
        temperature=section["temperature"],
        top_p=section["top_p"],
        seed=settings["seed"],
    )


def task_settings(settings: Mapping[str, Any]) -> dict[str, GenerationSettings]:
    """Each generated task's decoding settings."""
    return {
        COMMIT_MESSAGE: generation_settings(
            settings, settings["commit_messages"]["max_new_tokens"]
        ),
        CODE_CHANGE: generation_settings(settings, settings["code_changes"]["max_new_tokens"]),
        BEHAVIOUR: generation_settings(settings, settings["behaviour"]["max_new_tokens"]),
    }


def fim_settings(
    settings: Mapping[str, Any], seq_len: int, context: int | None
) -> GenerationSettings:
    """FIM decoding: the shared section, its prompt within a training block less one token
    (as ``repotune complete`` asks), prompt and middle within the model's context."""
    wanted = generation_settings(settings, settings["fim"]["max_new_tokens"])
    max_prompt, max_new = block_budget(seq_len, wanted.max_new_tokens, context)
    return dataclasses.replace(
        wanted, max_prompt_tokens=min(max_prompt, wanted.max_prompt_tokens), max_new_tokens=max_new
    )


def questions(
    request: EvaluateRequest, template: Template, tokenizer: PreTrainedTokenizerBase
) -> Questions:
    """The sampled commit-message and code-change examples and the behavioural tests."""
    settings = request.settings
    encoder = TextEncoder(tokenizer, template.markers)
    path, seed = request.test_commits, settings["seed"]
    total = eval_tasks.count_commits(path)
    drawn = eval_tasks.sample_indices(total, settings["commit_messages"]["samples"], seed)
    chosen = eval_tasks.read_commits(path, drawn)
    tests = load_tests(request.behaviour_tests) if request.behaviour_tests else []
    return Questions(
        commit_messages=eval_tasks.commit_message_examples(chosen, template, encoder),
        code_changes=eval_tasks.sampled_code_changes(
            path, template, seed, settings["code_changes"]["samples"], encoder
        ),
        behaviour=tests,
        test_commits=total,
        fim=read_fim_questions(request.fim_questions) if request.fim_questions else [],
    )


def run_generation(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    asked: Questions,
    decoding: Mapping[str, GenerationSettings],
    fim: tuple[list[list[int]], tuple[str, ...]] | None = None,
) -> tuple[dict[str, dict[str, list[Generation]]], dict[str, dict[str, float]]]:
    """Generations by variant and task, and each variant's generation time and token count;
    ``fim`` holds the FIM questions' prompt ids and stop strings when they are asked."""
    prompts = {
        COMMIT_MESSAGE: ([e.prompt_ids for e in asked.commit_messages], template.markers, None),
        CODE_CHANGE: (
            [e.prompt_ids for e in asked.code_changes],
            (*template.markers, *CODE_STOP),
            None,
        ),
        BEHAVIOUR: (
            [test.prompt for test in asked.behaviour],
            template.markers,
            [test.stop for test in asked.behaviour],
        ),
    }
    if fim is not None:
        prompts[FIM] = (*fim, None)
    generations: dict[str, dict[str, list[Generation]]] = {}
    timing: dict[str, dict[str, float]] = {}
    for name in VARIANTS:
        started = time.perf_counter()
        generations[name] = {}
        with variant(model, name):
            for task, (texts, stop, per_prompt) in prompts.items():
                generations[name][task] = generate(
                    model, tokenizer, texts, decoding[task], stop, per_prompt,
                    desc=f"{task} ({name})",
                )  # fmt: skip
        seconds = time.perf_counter() - started
        tokens = sum(g.new_tokens for task in generations[name].values() for g in task)
        timing[name] = {
            "seconds": round(seconds, 3),
            "new_tokens": tokens,
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        }
        log.info("generation (%s): %s", name, timing[name])
    return generations, timing


def behaviour_results(
    tests: Sequence[BehaviourTest],
    generations: Mapping[str, Mapping[str, list[Generation]]],
    allow_code_execution: bool = False,
) -> dict[str, list[CheckResult]]:
    """Every behavioural test checked on each variant's generation (after all generation);
    python tests run generated code only with ``allow_code_execution``, else are skipped."""
    return {
        name: [
            check(test, generation.text, allow_code_execution=allow_code_execution)
            for test, generation in zip(tests, generations[name][BEHAVIOUR], strict=True)
        ]
        for name in VARIANTS
    }


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
    ppl: Mapping[str, BlockScores],
    message: Mapping[str, Mapping[str, Sequence[float]]],
    code: Mapping[str, Mapping[str, Sequence[float]]],
    checks: Mapping[str, Sequence[CheckResult]],
    seed: int,
    test_commits: int,
    fim: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``report.json``'s ``metrics``: every metric, base and adapted, delta, sample size, 95%
    paired bootstrap intervals (seeded with ``seed``) and verdict. Perplexity resamples blocks
    token-weighted; generated tasks resample prompts; behaviour resamples tests. Verdicts on
    the test split's metrics need ``test_commits`` to be large enough."""
    enough = report.enough_test_commits(test_commits)
    summary = {name: ppl[name].summary() for name in VARIANTS}
    transforms = {"perplexity": np.exp, "bits_per_token": lambda loss: loss / math.log(2)}
    table = {
        name: report.metric_entry(
            name,
            getattr(summary["base"], name),
            getattr(summary["adapted"], name),
            summary["adapted"].tokens,
            paired_ratio(
                ppl["base"].nll, ppl["adapted"].nll, ppl["adapted"].tokens, transform, seed
            ),
            enough,
        )
        for name, transform in transforms.items()
    }
    generated = [("commit_message", message), ("code_change", code)]
    for prefix, scores in [*generated, *([(FIM, fim)] if fim is not None else [])]:
        for key, base_values in scores["base"].items():
            adapted_values = scores["adapted"][key]
            table[f"{prefix}.{key}"] = report.metric_entry(
                f"{prefix}.{key}",
                mean(base_values),
                mean(adapted_values),
                len(base_values),
                paired_means(base_values, adapted_values, seed),
                enough,
            )
    both = [
        index
        for index, (base, adapted) in enumerate(zip(checks["base"], checks["adapted"], strict=True))
        if ran(base) and ran(adapted)
    ]
    passed = {name: [float(checks[name][index].passed) for index in both] for name in VARIANTS}
    table["behaviour.pass_rate"] = report.metric_entry(
        "behaviour.pass_rate",
        mean(passed["base"]),
        mean(passed["adapted"]),
        len(both),
        paired_means(passed["base"], passed["adapted"], seed),
    )
    return table


def ran(result: CheckResult) -> bool:
    """Whether a check ran: the sandbox reports a python test it may not run (code execution
    off) as ``skipped``, which is neither a pass nor a failure. The pass rate compares the two
    variants on the tests that ran for both."""
    return not getattr(result, "skipped", False)


def behaviour_by_kind(
    tests: Sequence[BehaviourTest], checks: Mapping[str, Sequence[CheckResult]]
) -> dict[str, dict[str, Any]]:
    """Pass rate per kind of test (:func:`repotune.evaluate.behaviour.kind_of`) and variant:
    a pattern test and a test that runs code say different things."""
    groups: dict[str, list[int]] = {}
    for index, test in enumerate(tests):
        groups.setdefault(kind_of(test), []).append(index)
    return {
        kind: {"count": len(indices)}
        | {name: pass_rate([checks[name][i] for i in indices]) for name in VARIANTS}
        for kind, indices in groups.items()
    }


def _generation_facts(
    generations: Mapping[str, Mapping[str, list[Generation]]],
    decoding: Mapping[str, GenerationSettings],
    context: int | None,
) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for task, settings in decoding.items():
        max_prompt, max_new = budgets(settings, context)
        facts[task] = {
            "max_new_tokens": max_new,
            "max_prompt_tokens": max_prompt,
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


def _generation_rows(
    asked: Questions, generations: Mapping[str, Mapping[str, list[Generation]]]
) -> Iterator[dict[str, Any]]:
    """generations.jsonl's rows (pass :func:`redacted` generations)."""
    for task, examples in (
        (COMMIT_MESSAGE, asked.commit_messages),
        (CODE_CHANGE, asked.code_changes),
    ):
        for index, example in enumerate(examples):
            row = {"task": task, "sha": example.sha, "reference": example.reference}
            yield _answered(row, generations, task, index)
    for index, fim_task in enumerate(asked.fim if FIM in generations["base"] else []):
        row = {
            "task": FIM,
            "sha": fim_task.sha,
            "path": fim_task.path,
            "reference": fim_task.middle,
        }
        yield _answered(row, generations, FIM, index)
    for index, test in enumerate(asked.behaviour):
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


def behaviour_rows(
    tests: Sequence[BehaviourTest], checks: Mapping[str, Sequence[CheckResult]], redactor: Redactor
) -> list[dict[str, Any]]:
    """report.json's ``behaviour``: each test's result per variant, reasons redacted (a
    must_not_match reason quotes the generation)."""
    return [
        {
            "name": test.name,
            "kind": kind_of(test),
            **{
                name: vars(checks[name][index])
                | {"reason": redactor.redact(checks[name][index].reason)}
                for name in VARIANTS
            },
        }
        for index, test in enumerate(tests)
    ]


def evaluate(request: EvaluateRequest) -> dict[str, Any]:
    """Run the stage; writes every output and returns the report (report.json's content)."""
    started = time.perf_counter()
    settings = request.settings
    torch.manual_seed(settings["seed"])
    training = training_facts(request.adapter_dir)
    base = base_facts(request.base_dir)
    redactor = Redactor(RedactSettings.from_config(dict(request.redact)))
    template = template_of(request.shard_stats)
    tokenizer = AutoTokenizer.from_pretrained(request.tokenizer_dir)
    asked = questions(request, template, tokenizer)
    allow_code = settings["behaviour"]["allow_code_execution"]
    if allow_code and any(test.python_test for test in asked.behaviour):
        chosen_isolation()  # refuses in one line, before any model loads, when nothing isolates
    blocks = load_blocks(request.test_shards)
    device = pick_device(settings["device"])
    model = load_adapted(request.adapter_dir, device=device)
    log.info(
        "evaluating %s on %s: %d test blocks, %d commit messages, %d code changes, "
        "%d FIM questions, %d tests",
        request.model, device, len(blocks), len(asked.commit_messages),
        len(asked.code_changes), len(asked.fim), len(asked.behaviour),
    )  # fmt: skip
    section = settings["perplexity"]
    ppl: dict[str, BlockScores] = {}
    for name in VARIANTS:
        with variant(model, name):
            ppl[name] = block_scores(
                model, blocks, section["batch_size"], section["max_blocks"], f"perplexity ({name})"
            )
        log.info("perplexity (%s): %s", name, ppl[name].summary().as_dict())
    decoding = task_settings(settings)
    context = context_length(model)
    fim = None
    seq_len, trained = fim_training(request.shard_stats)
    if request.fim_questions:
        decoding[FIM] = fim_settings(settings, seq_len, context)
        max_prompt = decoding[FIM].max_prompt_tokens
        fim = fim_prompts(
            tokenizer, template.name, template.markers, asked.fim, max_prompt, trained
        )
    generations, timing = run_generation(model, tokenizer, template, asked, decoding, fim)
    del model
    checks = behaviour_results(asked.behaviour, generations, allow_code)
    shown = redacted(generations, redactor)
    message = task_scores(COMMIT_MESSAGE, asked.commit_messages, generations)
    code = task_scores(CODE_CHANGE, asked.code_changes, generations)
    fim_scored = None
    if fim is not None:
        texts = {name: [g.text for g in generations[name][FIM]] for name in VARIANTS}
        fim_scored = fim_scores(asked.fim, texts)
    result = {
        "model": request.model,
        "base_model": training.pop("base_model"),
        "base": base,
        "adapter": request.adapter_dir,
        "template": template.name,
        "device": device,
        "samples": {
            "test_commits": asked.test_commits,
            "min_test_commits": report.MIN_SAMPLE,
            "enough_test_commits": report.enough_test_commits(asked.test_commits),
            "perplexity_blocks": len(ppl["adapted"].nll),
            "perplexity_tokens": sum(ppl["adapted"].tokens),
            "commit_messages": len(asked.commit_messages),
            "code_changes": len(asked.code_changes),
            "fim_questions": len(asked.fim),
            "behaviour_tests": len(asked.behaviour),
        },
        "metrics": metrics_table(
            ppl, message, code, checks, settings["seed"], asked.test_commits, fim_scored
        ),
        "fim": {
            "evaluated": fim is not None,
            "format": fim_format(template.name, tokenizer, trained),
            "python_questions": sum(task.language == "python" for task in asked.fim),
        },
        "perplexity": {name: ppl[name].summary().as_dict() for name in VARIANTS},
        "behaviour": behaviour_rows(asked.behaviour, checks, redactor),
        "behaviour_by_kind": behaviour_by_kind(asked.behaviour, checks),
        "generation": {
            "do_sample": settings["generation"]["do_sample"],
            "context_length": context,
            "tasks": _generation_facts(generations, decoding, context),
            "timing": timing,
        },
        "examples": _examples(asked, shown, settings["examples"]),
        "training": training,
        "settings": dict(settings),
    }
    rows = list(_generation_rows(asked, shown))
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
