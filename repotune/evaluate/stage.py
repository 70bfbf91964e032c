"""The evaluate stage: does the adapter know this repository better than its base model?

Every metric is measured twice on the same held-out (time-split ``test``) data: with the
adapter switched off (the base model, exactly the weights training started from) and with it on.
One model is loaded; peft's ``disable_adapter()`` gives the base, so both see the same weights,
dtype and quantization. A run, in order:

1. **perplexity** on the test shards (:mod:`repotune.evaluate.perplexity`);
2. **generation** for every question, base then adapted, through the one batched
   :func:`repotune.evaluate.generation.generate`: commit messages and code changes from a
   seeded sample of test commits (:mod:`repotune.evaluate.tasks`), and the behavioural
   tests' prompts;
3. **behavioural checks** once all generation is done: they start sandboxed child processes,
   which is best done while no torch work is in flight;
4. **scores** (:mod:`repotune.evaluate.metrics`) and the **report**
   (:mod:`repotune.evaluate.report`).
"""

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repotune.atomic import write_text
from repotune.errors import InputError
from repotune.evaluate import report
from repotune.evaluate import tasks as eval_tasks
from repotune.evaluate.behaviour import BehaviourTest, CheckResult, check, load_tests, pass_rate
from repotune.evaluate.generation import (
    Generation,
    GenerationSettings,
    budgets,
    context_length,
    generate,
)
from repotune.evaluate.perplexity import Perplexity, perplexity
from repotune.evaluate.tasks import CODE_CHANGE, CODE_STOP, COMMIT_MESSAGE, Example
from repotune.modeling import SUMMARY_FILE, load_adapted
from repotune.shards.render import Template, get_template
from repotune.shards.tokenizer import TextEncoder
from repotune.train.data import load_blocks

log = logging.getLogger("repotune.evaluate")
VARIANTS = report.VARIANTS
BEHAVIOUR = "behaviour"
TRAINING_KEYS = (
    "steps", "epochs", "tokens", "train_tokens", "final_train_loss", "final_val_loss",
    "best_val_loss", "best_step", "adapter", "tokens_per_s", "train_seconds", "trainable_params",
    "quantization", "dtype",
)  # fmt: skip


@dataclass(frozen=True)
class EvaluateRequest:
    """The stage's inputs and outputs (paths) and the ``evaluate:`` config section."""

    model: str
    adapter_dir: str
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


@dataclass
class Questions:
    """Everything the models are asked, by task."""

    commit_messages: list[Example]
    code_changes: list[Example]
    behaviour: list[BehaviourTest]
    test_commits: int


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


def questions(
    request: EvaluateRequest, template: Template, tokenizer: PreTrainedTokenizerBase
) -> Questions:
    """The sampled commit-message and code-change examples and the behavioural tests."""
    settings = request.settings
    encoder = TextEncoder(tokenizer, template.markers)
    commits = eval_tasks.read_commits(request.test_commits)
    seed = settings["seed"]
    chosen = eval_tasks.sample(commits, settings["commit_messages"]["samples"], seed)
    tests = load_tests(request.behaviour_tests) if request.behaviour_tests else []
    return Questions(
        commit_messages=eval_tasks.commit_message_examples(chosen, template, encoder),
        code_changes=eval_tasks.code_change_examples(
            commits, template, seed, settings["code_changes"]["samples"], encoder
        ),
        behaviour=tests,
        test_commits=len(commits),
    )


def run_generation(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    asked: Questions,
    decoding: Mapping[str, GenerationSettings],
) -> tuple[dict[str, dict[str, list[Generation]]], dict[str, dict[str, float]]]:
    """Generations by variant and task, and each variant's generation time and token count."""
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
    tests: Sequence[BehaviourTest], generations: Mapping[str, Mapping[str, list[Generation]]]
) -> dict[str, list[CheckResult]]:
    """Every behavioural test checked on each variant's generation (after all generation)."""
    return {
        name: [
            check(test, generation.text)
            for test, generation in zip(tests, generations[name][BEHAVIOUR], strict=True)
        ]
        for name in VARIANTS
    }


def task_scores(
    task: str,
    examples: Sequence[Example],
    generations: Mapping[str, Mapping[str, Sequence[Generation]]],
) -> dict[str, dict[str, Any]]:
    """Each variant's mean scores on one generated task (with the example count)."""
    return {
        name: eval_tasks.score(
            task,
            [
                (eval_tasks.answer(task, generation.text), example.reference)
                for example, generation in zip(examples, generations[name][task], strict=True)
            ],
        )
        for name in VARIANTS
    }


def metrics_table(
    ppl: Mapping[str, Perplexity],
    message: Mapping[str, Mapping[str, Any]],
    code: Mapping[str, Mapping[str, Any]],
    checks: Mapping[str, Sequence[CheckResult]],
) -> dict[str, dict[str, Any]]:
    """``report.json``'s ``metrics``: every metric, base and adapted, delta and sample size."""
    table = {
        name: report.metric_entry(
            name,
            getattr(ppl["base"], name),
            getattr(ppl["adapted"], name),
            ppl["adapted"].tokens,
        )
        for name in ("perplexity", "bits_per_token")
    }
    for prefix, scores in (("commit_message", message), ("code_change", code)):
        for key in scores["base"]:
            if key != "count":
                table[f"{prefix}.{key}"] = report.metric_entry(
                    f"{prefix}.{key}",
                    scores["base"][key],
                    scores["adapted"][key],
                    scores["base"]["count"],
                )
    table["behaviour.pass_rate"] = report.metric_entry(
        "behaviour.pass_rate",
        pass_rate(checks["base"]),
        pass_rate(checks["adapted"]),
        len(checks["base"]),
    )
    return table


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
                    "finish": dict(Counter(g.finish for g in generations[name][task])),
                }
                for name in VARIANTS
            },
        }
    return facts


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


def _generation_rows(
    asked: Questions, generations: Mapping[str, Mapping[str, list[Generation]]]
) -> Iterator[dict[str, Any]]:
    for task, examples in (
        (COMMIT_MESSAGE, asked.commit_messages),
        (CODE_CHANGE, asked.code_changes),
    ):
        for index, example in enumerate(examples):
            row: dict[str, Any] = {"task": task, "sha": example.sha, "reference": example.reference}
            for name in VARIANTS:
                generation = generations[name][task][index]
                row[name] = generation.text
                row[f"{name}_finish"] = generation.finish
            yield row
    for index, test in enumerate(asked.behaviour):
        row = {"task": BEHAVIOUR, "name": test.name, "reference": None}
        for name in VARIANTS:
            generation = generations[name][BEHAVIOUR][index]
            row[name] = generation.text
            row[f"{name}_finish"] = generation.finish
        yield row


def training_facts(adapter_dir: str | Path) -> dict[str, Any]:
    """The training summary's headline numbers (steps, tokens, final losses, tokens/s)."""
    path = Path(adapter_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(str(path), f"cannot be read ({error})", "rerun the train rule") from None
    return {key: summary.get(key) for key in TRAINING_KEYS} | {"base_model": summary["base_model"]}


def evaluate(request: EvaluateRequest) -> dict[str, Any]:
    """Run the stage; writes every output and returns the report (report.json's content)."""
    started = time.perf_counter()
    settings = request.settings
    torch.manual_seed(settings["seed"])
    training = training_facts(request.adapter_dir)
    template = template_of(request.shard_stats)
    tokenizer = AutoTokenizer.from_pretrained(request.tokenizer_dir)
    asked = questions(request, template, tokenizer)
    blocks = load_blocks(request.test_shards)
    device = pick_device(settings["device"])
    model = load_adapted(request.adapter_dir, device=device)
    log.info(
        "evaluating %s on %s: %d test blocks, %d commit messages, %d code changes, %d tests",
        request.model, device, len(blocks), len(asked.commit_messages),
        len(asked.code_changes), len(asked.behaviour),
    )  # fmt: skip
    section = settings["perplexity"]
    ppl: dict[str, Perplexity] = {}
    for name in VARIANTS:
        with variant(model, name):
            ppl[name] = perplexity(
                model, blocks, section["batch_size"], section["max_blocks"], f"perplexity ({name})"
            )
        log.info("perplexity (%s): %s", name, ppl[name].as_dict())
    decoding = task_settings(settings)
    generations, timing = run_generation(model, tokenizer, template, asked, decoding)
    context = context_length(model)
    del model
    checks = behaviour_results(asked.behaviour, generations)
    message = task_scores(COMMIT_MESSAGE, asked.commit_messages, generations)
    code = task_scores(CODE_CHANGE, asked.code_changes, generations)
    result = {
        "model": request.model,
        "base_model": training.pop("base_model"),
        "adapter": request.adapter_dir,
        "template": template.name,
        "device": device,
        "samples": {
            "test_commits": asked.test_commits,
            "perplexity_blocks": ppl["adapted"].blocks,
            "perplexity_tokens": ppl["adapted"].tokens,
            "commit_messages": len(asked.commit_messages),
            "code_changes": len(asked.code_changes),
            "behaviour_tests": len(asked.behaviour),
        },
        "metrics": metrics_table(ppl, message, code, checks),
        "perplexity": {name: ppl[name].as_dict() for name in VARIANTS},
        "behaviour": [
            {
                "name": test.name,
                **{name: vars(checks[name][index]) for name in VARIANTS},
            }
            for index, test in enumerate(asked.behaviour)
        ],
        "generation": {
            "do_sample": settings["generation"]["do_sample"],
            "context_length": context,
            "tasks": _generation_facts(generations, decoding, context),
            "timing": timing,
        },
        "examples": _examples(asked, generations, settings["examples"]),
        "training": training,
        "settings": dict(settings),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(request, result, asked, generations)
    return result


def write_outputs(
    request: EvaluateRequest,
    result: Mapping[str, Any],
    asked: Questions,
    generations: Mapping[str, Mapping[str, list[Generation]]],
) -> None:
    """report.json, generations.jsonl, the two plots and report.md, each written atomically."""
    write_text(request.report_json, json.dumps(result, indent=2) + "\n")
    lines = (json.dumps(row, ensure_ascii=False) for row in _generation_rows(asked, generations))
    write_text(request.generations, "".join(f"{line}\n" for line in lines))
    log_path = Path(request.adapter_dir) / "training_log.csv"
    report.plot_loss_curves(report.read_training_log(log_path), request.loss_plot)
    report.plot_metrics(
        result["metrics"], request.metrics_plot, f"{request.model}: base vs base + adapter"
    )
    report.write_markdown(result, request.report_md, request.loss_plot, request.metrics_plot)
