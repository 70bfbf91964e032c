"""The CUDA paths in one call: QLoRA/bf16/fp16 training, OOM back-off, 8-bit optimizer and int8
loading, GPU generation, and the workflow end to end, with a JSON and a markdown table.

No weights are downloaded: every model is built from a config with the real architecture's
shapes (StarCoder2-3B, GPT-2 medium) and random weights, saved to a local directory and trained
through repotune's own entry points (``repotune.train.trainer.train`` with a ``TrainRequest``
whose model entry is the preset with ``base`` pointing at that directory). Parts:

* ``train_gpt2_medium_fp16``, ``train_starcoder2_nf4``, ``train_starcoder2_bf16``: a few dozen
  LoRA steps each; tokens/s, peak memory (``torch.cuda.max_memory_allocated`` and reserved),
  the memory estimate the trainer chose its micro-batch by (:mod:`repotune.train.memory`; goal:
  within 15% of allocated), and MFU: ``6 N + 12 L H S`` FLOPs a token (the full fine-tuning
  convention: LoRA skips the frozen weights' gradients, checkpointing adds a forward) over the
  card's dense bf16/fp16 peak;
* ``oom_backoff``: a micro-batch far too large for the card hits a real CUDA out-of-memory and
  backs off; after a checkpoint the allocator is capped below what that micro-batch needs
  (``torch.cuda.set_per_process_memory_fraction``, a smaller card) and training must back off
  again, resume from the checkpoint and finish;
* ``paged_adamw_int8``: paged 8-bit AdamW (bitsandbytes) once, int8 (LLM.int8) loading and
  training once, and the int8 adapter loaded back with ``repotune.modeling.load_adapted``;
* ``generation``: ``repotune.inference.decoding.generate`` batched against one prompt at a
  time, same prompts, greedy;
* ``workflow``: ``snakemake --cores 4`` on the tiny preset with CUDA visible; train and
  evaluate must report the GPU and ``repotune.manifest.verify`` must accept the manifest.

Each part runs in its own subprocess with its own timeout; a failed or timed-out part is
recorded and the rest still run. ``--dry-run`` uses tiny shapes on one CPU thread: every path
but the CUDA-only ones (the OOM is raised by a hook, paged 8-bit AdamW must be refused, the GPU
checks expect the CPU), so ``make test`` runs it (tests/test_gpu_check.py; the workflow part's
snakemake run there is the suite's shared run, which its checks are made on).

Run: .venv/bin/python -m benchmarks.gpu_check --out DIR [--dry-run] [--parts a,b] [--budget 480]
Writes DIR/gpu_check.json, DIR/gpu_check.md and DIR/gpu_check.log; exits 1 if a part failed.
"""

import sys
from pathlib import Path

# Run as a script, benchmarks/ comes first on sys.path, and its tokenize.py would shadow the
# standard library's tokenize module: take it off.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import multiprocessing.context  # noqa: E402
import multiprocessing.forkserver  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import IO, Any  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from repotune.atomic import atomic_path  # noqa: E402
from repotune.config import resolve_config  # noqa: E402
from repotune.errors import InputError  # noqa: E402
from repotune.inference.decoding import GenerationSettings, generate  # noqa: E402
from repotune.inference.prompts import text_prompt  # noqa: E402
from repotune.modeling import build_model, load_adapted  # noqa: E402
from repotune.models import load_preset  # noqa: E402
from repotune.train.trainer import Hooks, TrainRequest, train  # noqa: E402
from testdata.gitrepo import GitRepo  # noqa: E402
from testdata.training import documents, write_inputs  # noqa: E402

log = logging.getLogger("gpu_check")

# Dense (no sparsity) bf16/fp16 tensor-core peaks, FLOP/s, by a substring of the device name.
PEAK_FLOPS = {
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
    "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "T4": 65e12, "RTX 2080": 40e12,
}  # fmt: skip
MB = 1024**2


@dataclass(frozen=True)
class Shapes:
    """Model shapes, sequence lengths and step counts of one mode (GPU or dry run)."""

    starcoder2: dict[str, Any]
    gpt2: dict[str, Any]
    starcoder2_seq: int
    gpt2_seq: int
    steps: int
    batch: int
    docs: int
    oom_micro: int
    prompts: int
    new_tokens: int


# StarCoder2-3B and GPT-2 medium as published (config.json of bigcode/starcoder2-3b and
# openai-community/gpt2-medium).
GPU = Shapes(
    starcoder2={
        "vocab_size": 49152, "hidden_size": 3072, "intermediate_size": 12288,
        "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
        "max_position_embeddings": 16384, "rope_theta": 999999.4420358813,
        "sliding_window": 4096, "use_bias": True, "hidden_act": "gelu_pytorch_tanh",
        "norm_epsilon": 1e-5, "tie_word_embeddings": True,
    },
    gpt2={"vocab_size": 50257, "n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},
    starcoder2_seq=2048, gpt2_seq=1024, steps=24, batch=8, docs=1200, oom_micro=128,
    prompts=8, new_tokens=32,
)  # fmt: skip
DRY = Shapes(
    starcoder2={
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "use_bias": True, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True,
    },
    gpt2={"vocab_size": 512, "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128},
    starcoder2_seq=128, gpt2_seq=128, steps=4, batch=4, docs=48, oom_micro=8,
    prompts=4, new_tokens=8,
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What every part gets: the mode, its shapes, a scratch directory shared by the parts."""

    dry_run: bool
    shapes: Shapes
    work: Path

    @property
    def cuda(self) -> bool:
        return torch.cuda.is_available() and not self.dry_run


# -- building blocks --------------------------------------------------------------------------


def inputs(ctx: Context, name: str, seq_len: int) -> Any:
    """Tokenizer and packed shards for ``name`` (written once, shared by the parts)."""
    results = ctx.work / "inputs" / str(seq_len)
    root = results / name
    if not (root / "shards" / "validation").is_dir():
        write_inputs(
            results, model=name, seq_len=seq_len, train_docs=ctx.shapes.docs, validation_docs=16
        )
    return root


def base_dir(ctx: Context, family: str) -> Path:
    """A randomly initialised model of the family's shapes, saved once as safetensors."""
    target = ctx.work / "bases" / family
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, GPT2Config, Starcoder2Config

    shapes = ctx.shapes.starcoder2 if family == "starcoder2" else ctx.shapes.gpt2
    # Our fixture tokenizer has only a few hundred tokens; its special ids fit any vocabulary.
    special = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    config = (Starcoder2Config if family == "starcoder2" else GPT2Config)(**shapes, **special)
    device = "cuda" if ctx.cuda else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if ctx.cuda else None)
    with atomic_path(target) as temporary:
        model.save_pretrained(temporary, safe_serialization=True)
    del model
    return target


def run_training(
    ctx: Context,
    name: str,
    preset: str,
    family: str,
    seq_len: int,
    overrides: dict[str, Any],
    hooks: Hooks | None = None,
    fresh: bool = True,
) -> dict[str, Any] | None:
    """One call of repotune's ``train`` on a built base of ``family``: the preset's settings with
    ``overrides`` over them (a preset's own ``train:`` keys win over the config's, so those are
    given in the model entry).

    Returns the training summary (None when ``hooks`` interrupted the run)."""
    data = inputs(ctx, "fixture", seq_len)
    run_dir = ctx.work / "runs" / name
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    # Only what the preset's own train: sets goes into the model entry: the entry is part of the
    # checkpoint's hash, and e.g. a changed micro-batch must keep the checkpoint.
    preset_keys = load_preset(preset).get("train") or {}
    entry = {
        "preset": preset,
        "name": name,
        "base": str(base_dir(ctx, family)),
        "train": {key: value for key, value in overrides.items() if key in preset_keys},
    }
    request = TrainRequest(
        model=entry,
        shards_dir=str(data / "shards"),
        tokenizer_dir=str(data / "tokenizer"),
        adapter_dir=str(run_dir / "adapter"),
        base_dir=str(run_dir / "base"),
        state_dir=str(run_dir / "train_state"),
        settings=resolve_config({"train": overrides})["train"],
    )
    return train(request, hooks)


def training_log(ctx: Context, name: str) -> list[dict[str, str]]:
    """Rows of the run's training_log.csv (written by the trainer as it goes)."""
    path = ctx.work / "runs" / name / "train_state" / "training_log.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def flops_per_token(family: str, shapes: dict[str, Any], seq_len: int) -> tuple[float, int]:
    """``6 N + 12 L H S``: N parameters (counted on the meta device), L layers, H hidden, S
    sequence length (PaLM's model FLOPs a token, attention included); and N."""
    from transformers import AutoModelForCausalLM, GPT2Config, Starcoder2Config

    config = (Starcoder2Config if family == "starcoder2" else GPT2Config)(**shapes)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(parameter.numel() for parameter in model.parameters())
    layers = config.num_hidden_layers
    hidden = config.hidden_size
    return 6 * params + 12 * layers * hidden * seq_len, params


def peak_flops(dtype: str) -> float | None:
    """The card's dense peak for ``dtype`` (None on CPU or an unknown card)."""
    if not torch.cuda.is_available() or dtype not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name()
    return next((value for key, value in PEAK_FLOPS.items() if key in name), None)


def measured(ctx: Context) -> dict[str, float]:
    """Peak memory since the last reset: CUDA allocator's allocated and reserved, or RSS."""
    if ctx.cuda:
        return {
            "max_allocated_mb": round(torch.cuda.max_memory_allocated() / MB, 1),
            "max_reserved_mb": round(torch.cuda.max_memory_reserved() / MB, 1),
        }
    import resource

    return {"max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def prepare(ctx: Context, family: str, seq_len: int) -> None:
    """Build the base and the shards first, then start the peak-memory count from zero: the
    peak then belongs to training alone (building a 3B model in bf16 on the GPU takes 6 GB)."""
    base_dir(ctx, family)
    inputs(ctx, "fixture", seq_len)
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def speed_and_memory(
    ctx: Context, name: str, family: str, seq_len: int, summary: dict[str, Any]
) -> dict[str, Any]:
    """What a training part reports: tokens/s, peak memory beside the estimate, MFU."""
    shapes = ctx.shapes.starcoder2 if family == "starcoder2" else ctx.shapes.gpt2
    rows = training_log(ctx, name)
    # The first window holds the warm-up (kernel selection, allocator growth): leave it out.
    steady = [float(row["tokens_per_s"]) for row in rows[1:]] or [summary["tokens_per_s"]]
    fill = summary["train_tokens"] / (summary["train_blocks"] * summary["seq_len"])
    tokens_per_s = sorted(steady)[len(steady) // 2]
    computed_per_s = tokens_per_s / fill  # padding positions are computed too
    per_token, params = flops_per_token(family, shapes, seq_len)
    peak = peak_flops(summary["dtype"])
    estimate = summary["memory_estimate_bytes"]["total"]
    memory = measured(ctx)
    result = {
        "params": params,
        "seq_len": seq_len,
        "steps": summary["steps"],
        "dtype": summary["dtype"],
        "quantization": summary["quantization"],
        "gradient_checkpointing": summary["gradient_checkpointing"],
        "micro_batch": summary["micro_batch"],
        "accumulation": summary["accumulation"],
        "tokens_per_s": round(tokens_per_s, 1),
        "computed_tokens_per_s": round(computed_per_s, 1),
        "mfu": None if peak is None else round(computed_per_s * per_token / peak, 4),
        "estimate_mb": round(estimate / MB, 1),
        **memory,
        "final_train_loss": summary["final_train_loss"],
        "device": summary["hardware"]["name"],
    }
    if "max_allocated_mb" in memory:
        ratio = estimate / MB / memory["max_allocated_mb"]
        result["estimate_over_allocated"] = round(ratio, 3)
        result["estimate_within_15pct"] = abs(ratio - 1) <= 0.15
    if not math.isfinite(summary["final_train_loss"] or math.nan):
        raise RuntimeError(f"{name}: the training loss is not finite")
    return result


# -- the parts -------------------------------------------------------------------------------


def train_part(name: str, preset: str, family: str, **overrides: Any) -> Callable:
    def part(ctx: Context) -> dict[str, Any]:
        shapes = ctx.shapes
        seq_len = shapes.starcoder2_seq if family == "starcoder2" else shapes.gpt2_seq
        extra = dict(overrides)
        if ctx.dry_run and extra.get("compute_dtype") == "fp16":  # refused on a CPU
            extra.pop("compute_dtype")
        prepare(ctx, family, seq_len)
        summary = run_training(
            ctx, name, preset, family, seq_len,
            dict(max_steps=shapes.steps, batch_size=shapes.batch, max_epochs=1000,
                     eval_interval=0, logging_steps=max(1, shapes.steps // 6),
                     checkpoint_interval=0, **extra),
        )  # fmt: skip
        wanted = {"quantization": extra["quantization"], "dtype": extra.get("compute_dtype")}
        if ctx.dry_run:
            wanted["dtype"] = None
        got = {key: summary[key] for key in wanted}
        if any(value is not None and got[key] != value for key, value in wanted.items()):
            raise RuntimeError(f"{name}: trained with {got}, not {wanted}")
        return speed_and_memory(ctx, name, family, seq_len, summary)

    return part


def oom_backoff(ctx: Context) -> dict[str, Any]:
    """A real CUDA OOM at a too-large micro-batch; then another after a checkpoint, resumed."""
    shapes = ctx.shapes
    name, seq_len = "oom", shapes.gpt2_seq
    big = shapes.oom_micro
    limit = {"micro": None}

    def simulated_oom(step: int, micro: int) -> None:  # the dry run's stand-in for the card
        if limit["micro"] is not None and micro > limit["micro"]:
            raise torch.OutOfMemoryError(f"simulated: micro-batch {micro} > {limit['micro']}")

    hook = None if ctx.cuda else simulated_oom
    hooks_a = Hooks(stop_after_steps=3, before_micro_batch=hook)
    common = dict(
        batch_size=big, max_epochs=1000, eval_interval=0, logging_steps=1, checkpoint_interval=1,
        max_steps=6, **({} if ctx.dry_run else {"compute_dtype": "fp16"}),
    )  # fmt: skip
    # A: the micro-batch is the whole, far too large batch.
    limit["micro"] = big // 4
    prepare(ctx, "gpt2", seq_len)
    run_training(ctx, name, "gpt2-medium", "gpt2", seq_len,
                 dict(micro_batch_size=big, **common), hooks_a)  # fmt: skip
    micro_a = int(training_log(ctx, name)[-1]["micro_batch"])
    # One more step at micro_a alone, from the checkpoint, for a peak that no failed attempt
    # inflated: the smaller card of part B is sized from it.
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run_training(ctx, name, "gpt2-medium", "gpt2", seq_len,
                 dict(micro_batch_size=micro_a, **common),
                 Hooks(stop_after_steps=1, before_micro_batch=hook), fresh=False)  # fmt: skip
    checkpoint_step = int(training_log(ctx, name)[-1]["step"])
    peak_a = measured(ctx)
    # B: a smaller card: what micro-batch micro_a needed no longer fits.
    capped = None
    if ctx.cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        capped = 0.6 * torch.cuda.max_memory_allocated() / total
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(capped)
    limit["micro"] = max(1, micro_a // 2)
    summary = run_training(ctx, name, "gpt2-medium", "gpt2", seq_len,
                           dict(micro_batch_size=micro_a, **common),
                           Hooks(before_micro_batch=hook), fresh=False)  # fmt: skip
    rows = training_log(ctx, name)
    after = [row for row in rows if int(row["step"]) > checkpoint_step]
    result = {
        "simulated": not ctx.cuda,
        "requested_micro_batch": big,
        "micro_batch_after_first_oom": micro_a,
        "peak_at_that_micro_batch": peak_a,
        "memory_fraction_cap": None if capped is None else round(capped, 3),
        "checkpoint_step": checkpoint_step,
        "backoffs_after_resume": summary["oom_backoffs"],
        "micro_batch_after_resume": summary["micro_batch"],
        "steps": summary["steps"],
        "logged_steps": [int(row["step"]) for row in rows],
    }
    ok = (
        micro_a < big
        and summary["oom_backoffs"] >= 1
        and summary["micro_batch"] < micro_a
        and summary["steps"] == common["max_steps"]
        and [int(row["step"]) for row in rows] == list(range(1, common["max_steps"] + 1))
        and all(int(row["micro_batch"]) == summary["micro_batch"] for row in after)
    )
    if not ok:
        raise RuntimeError(f"the back-off did not recover as expected: {result}")
    return result


def paged_adamw_int8(ctx: Context) -> dict[str, Any]:
    """Paged 8-bit AdamW once, int8 loading once, and the int8 adapter loaded back."""
    shapes = ctx.shapes
    seq_len = shapes.gpt2_seq
    common = dict(max_steps=max(3, shapes.steps // 4), batch_size=shapes.batch, max_epochs=1000,
                  eval_interval=0, logging_steps=1, checkpoint_interval=0)  # fmt: skip
    result: dict[str, Any] = {}
    prepare(ctx, "gpt2", seq_len)
    try:
        summary = run_training(ctx, "paged", "gpt2-medium", "gpt2", seq_len,
                               dict(optimizer="paged_adamw_8bit", **common))  # fmt: skip
        result["paged_adamw_8bit"] = {
            "final_train_loss": summary["final_train_loss"],
            "estimate_mb": round(summary["memory_estimate_bytes"]["total"] / MB, 1),
            **measured(ctx),
        }
    except InputError as error:
        if ctx.cuda:
            raise
        result["paged_adamw_8bit"] = {"refused_on_cpu": str(error)}
    prepare(ctx, "gpt2", seq_len)
    summary = run_training(ctx, "int8", "gpt2-medium", "gpt2", seq_len,
                           dict(quantization="int8", **common))  # fmt: skip
    result["int8"] = {
        "final_train_loss": summary["final_train_loss"],
        "estimate_mb": round(summary["memory_estimate_bytes"]["total"] / MB, 1),
        **measured(ctx),
    }
    device = "cuda" if ctx.cuda else "cpu"
    model = load_adapted(ctx.work / "runs" / "int8" / "adapter", device=device)
    ids = torch.arange(2, 34, device=device).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    result["int8"]["reloaded_logits_finite"] = bool(torch.isfinite(logits).all())
    if not result["int8"]["reloaded_logits_finite"]:
        raise RuntimeError("the reloaded int8 model gives non-finite logits")
    if "refused_on_cpu" not in result["paged_adamw_8bit"] and not math.isfinite(
        result["paged_adamw_8bit"]["final_train_loss"]
    ):
        raise RuntimeError("paged 8-bit AdamW: the training loss is not finite")
    return result


def generation(ctx: Context) -> dict[str, Any]:
    """repotune's batched generate against one prompt at a time, on a GPT-2-medium shape.

    Both batch sizes decode the same prompts. On an H100 a step costs ~40 ms at either batch
    size (the eager forward's per-op overhead, see BENCHMARKS.md), so the one-at-a-time pass
    costs ``prompts x new_tokens`` steps: the shapes keep it to ~12 s, inside the part's 60 s
    with the imports, the model and the warm-up.
    """
    shapes = ctx.shapes
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(inputs(ctx, "fixture", shapes.gpt2_seq) / "tokenizer")
    arch = {key: shapes.gpt2[key] for key in ("n_layer", "n_head", "n_embd")}
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    device = "cuda" if ctx.cuda else "cpu"
    dtype = torch.bfloat16 if ctx.cuda and torch.cuda.is_bf16_supported() else torch.float32
    torch.manual_seed(0)
    # Initialised where it runs: random init of 350 M parameters on the CPU takes seconds.
    with torch.device(device):
        model = build_model(arch, shapes.gpt2["vocab_size"], shapes.gpt2["n_positions"], special)
    model = model.to(dtype=dtype).eval()
    from repotune.shards.tokenizer import TextEncoder

    encoder = TextEncoder(tokenizer, ())
    texts = [text[:200] for text in documents(shapes.prompts, seed=3)]
    prompts = [text_prompt(text, encoder, (), 256) for text in texts]
    warm_up = GenerationSettings(max_new_tokens=4, batch_size=8)
    generate(model, tokenizer, prompts[:2], warm_up)  # first-call allocations and kernels
    timings = {}
    outputs = {}
    for batch in (8, 1):
        config = GenerationSettings(max_new_tokens=shapes.new_tokens, batch_size=batch)
        if ctx.cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        results = generate(model, tokenizer, prompts, config)
        if ctx.cuda:
            torch.cuda.synchronize()
        timings[batch] = time.perf_counter() - started
        outputs[batch] = results
    tokens = sum(result.new_tokens for result in outputs[8])
    same = sum(a.text == b.text for a, b in zip(outputs[8], outputs[1], strict=True))
    steps = {batch: ms_per_step(outputs[batch], batch, timings[batch]) for batch in (8, 1)}
    return {
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "prompts": len(prompts),
        "max_new_tokens": shapes.new_tokens,
        "generated_tokens": tokens,
        "batched_tokens_per_s": round(tokens / timings[8], 1),
        "one_at_a_time_tokens_per_s": round(
            sum(result.new_tokens for result in outputs[1]) / timings[1], 1
        ),
        "batched_ms_per_step": steps[8],
        "one_at_a_time_ms_per_step": steps[1],
        "speedup": round(timings[1] / timings[8], 2),
        "same_text": f"{same}/{len(prompts)}",
    }


def ms_per_step(results: list[Any], batch: int, seconds: float) -> float:
    """Milliseconds a decoding step (one forward pass of a batch, its prefill included): a batch
    runs as many steps as its longest generation, batches formed as generate forms them (the
    longest prompts first)."""
    order = sorted(range(len(results)), key=lambda index: (-results[index].prompt_tokens, index))
    steps = sum(
        max(results[index].new_tokens for index in order[start : start + batch])
        for start in range(0, len(order), batch)
    )
    return round(1000 * seconds / steps, 2)


# The workflow run: the tiny preset, a one-layer model and a few steps; evaluation trimmed.
WORKFLOW_CONFIG = {
    "models": [{"preset": "tiny", "architecture": {"n_layer": 1, "n_head": 2, "n_embd": 32}}],
    "tokenize": {"seq_len": 64},
    "train": {"max_steps": 3, "batch_size": 2, "eval_interval": 0},
    "curate": {"split": {"test_size": 2, "validation_size": 2}},
    "evaluate": {
        "commit_messages": {"samples": 2, "max_new_tokens": 8},
        "code_changes": {"samples": 2, "max_new_tokens": 8},
        "behaviour": {"max_new_tokens": 8},
        "examples": 1,
    },
}


def workflow(ctx: Context) -> dict[str, Any]:
    """``snakemake --cores 4`` end to end; train and evaluate on the expected device."""
    work = ctx.work / "workflow"
    command = workflow_command(work)
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"snakemake failed:\n{(run.stdout + run.stderr)[-3000:]}")
    return {"snakemake_seconds": round(seconds, 1), **workflow_checks(work, ctx.cuda)}


def workflow_command(work: Path) -> list[str]:
    """The workflow part's ``snakemake --cores 4`` command, after writing what it runs on into a
    fresh ``work``: a 12-commit repository and WORKFLOW_CONFIG."""
    shutil.rmtree(work, ignore_errors=True)
    repo = GitRepo(work / "data")
    for number in range(12):
        body = "".join(f"def f{i}():\n    return {number * i}\n" for i in range(number % 4 + 2))
        repo.commit(f"Add module number {number}", {f"pkg/m{number}.py": body})
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump({"repo": str(repo.path), **WORKFLOW_CONFIG}))
    bin_dir = Path(sys.executable).parent
    snakemake = bin_dir / "snakemake"
    command = [str(snakemake)] if snakemake.exists() else [sys.executable, "-m", "snakemake"]
    return [*command, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(configfile), "--cores", "4"]  # fmt: skip


def workflow_checks(work: Path, cuda: bool) -> dict[str, Any]:
    """What a finished run in ``work`` must show: the tiny model trained and evaluated on the
    GPU (``cuda``) or the CPU, and a manifest that ``repotune.manifest.verify`` accepts.

    Raises RuntimeError when it does not."""
    results = work / "results" / "tiny"
    summary = json.loads((results / "adapter" / "training_summary.json").read_text())
    report = json.loads((results / "eval" / "report.json").read_text())
    verify = subprocess.run(
        [sys.executable, "-m", "repotune.manifest.verify", str(results / "manifest.json"),
         "--root", str(work)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    expected = "cuda" if cuda else "cpu"
    result = {
        "train_device": summary["hardware"]["kind"],
        "train_device_name": summary["hardware"]["name"],
        "evaluate_device": report["device"],
        "manifest_verifies": verify.returncode == 0,
    }
    if (
        result["train_device"] != expected
        or not report["device"].startswith(expected)
        or not result["manifest_verifies"]
    ):
        raise RuntimeError(f"expected {expected} and a verified manifest: {result} {verify.stderr}")
    return result


PARTS: dict[str, tuple[Callable[[Context], dict[str, Any]], int, int]] = {
    # name: (function, timeout in seconds on a GPU, in a dry run: generous, the CPUs it runs on
    # are often shared and loaded)
    "train_gpt2_medium_fp16": (
        train_part("gpt2_medium_fp16", "gpt2-medium", "gpt2", quantization="none",
                   compute_dtype="fp16"), 90, 400),
    "train_starcoder2_nf4": (
        train_part("starcoder2_nf4", "starcoder2-3b", "starcoder2", quantization="nf4"),
        150, 400),
    "train_starcoder2_bf16": (
        train_part("starcoder2_bf16", "starcoder2-3b", "starcoder2", quantization="none",
                   compute_dtype="bf16"), 100, 400),
    "oom_backoff": (oom_backoff, 90, 400),
    "paged_adamw_int8": (paged_adamw_int8, 75, 400),
    "generation": (generation, 60, 300),
    "workflow": (workflow, 150, 900),
}  # fmt: skip


# -- running the parts -----------------------------------------------------------------------

# The dry run hides any GPU, so it takes the CPU paths wherever it runs, and computes on one
# thread: its tiny shapes gain nothing from more, and on a shared, loaded CPU torch's threads
# spin waiting for each other (at load 4 on 2 cores the OOM part's process took 29 s of CPU on
# two threads, 10 s on one).
DRY_RUN_ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def run_part(name: str, work: Path, dry_run: bool, result_file: Path) -> None:
    """The child process: run one part and write its result (or its error) as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ctx = Context(dry_run=dry_run, shapes=DRY if dry_run else GPU, work=work)
    started = time.perf_counter()
    try:
        record = {"status": "ok", **PARTS[name][0](ctx)}
    except Exception as error:
        traceback.print_exc()
        record = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
    record["seconds"] = round(time.perf_counter() - started, 1)
    with atomic_path(result_file) as temporary:
        temporary.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def _part_child(name: str, work: Path, result_file: Path, log_path: Path) -> None:
    """A dry run's part, in a process forked from the fork server (:func:`_dry_run_context`):
    its own session (a timeout kills the part and anything it started), output to the log."""
    os.setsid()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    torch.set_num_threads(1)
    run_part(name, work, True, result_file)


def _dry_run_context() -> multiprocessing.context.ForkServerContext:
    """Where a dry run's parts start: a fork server that imported this module, and with it
    torch, transformers and peft, once. Starting six fresh interpreters cost 30 s of the dry
    run's 40 on 2 cores; each part is still its own process with its own timeout. The server
    starts with no GPU visible and one thread (:data:`DRY_RUN_ENV`). A GPU run starts each part
    as a fresh interpreter instead: CUDA cannot be used in a process forked from one that
    initialised it, and a GPU part takes long enough that the imports do not count."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["benchmarks.gpu_check"])
    saved = {key: os.environ.get(key) for key in DRY_RUN_ENV}
    os.environ.update(DRY_RUN_ENV)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return context


def _run_forked(name: str, work: Path, result_file: Path, log_path: Path, timeout: float) -> bool:
    """A dry run's part from the fork server; False when it ran past ``timeout``."""
    child = importlib.import_module("benchmarks.gpu_check")._part_child  # not __main__'s copy
    process = _dry_run_context().Process(
        target=child, args=(name, work, result_file, log_path), daemon=True
    )
    process.start()
    process.join(timeout)
    if process.exitcode is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the part's session: it and what it started
    process.kill()
    process.join()
    return False


def _run_fresh(name: str, work: Path, result_file: Path, log_file: IO[str], timeout: float) -> bool:
    """A GPU run's part in a fresh interpreter; False when it ran past ``timeout``."""
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--part", name,
               "--work", str(work), "--result", str(result_file)]  # fmt: skip
    try:
        subprocess.run(
            command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            timeout=timeout, check=False, start_new_session=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return True


def run_all(out: Path, parts: list[str], dry_run: bool, budget: float) -> dict[str, Any]:
    """Each part in its own process, under its own timeout and the overall budget."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="repotune-gpu-check-"))
    deadline = time.monotonic() + budget
    records: dict[str, Any] = {}
    log_path = out / "gpu_check.log"
    log_path.write_text("", encoding="utf-8")
    # Appending, as the forked parts do: each write lands at the end, none over another's.
    with open(log_path, "a", encoding="utf-8") as log_file:
        for name in parts:
            left = deadline - time.monotonic()
            if left < 10:
                records[name] = {"status": "skipped", "error": "the overall budget ran out"}
                continue
            timeout = min(PARTS[name][2 if dry_run else 1], left)
            result_file = work / "results" / f"{name}.json"
            log_file.write(f"\n===== {name} (timeout {timeout:.0f} s) =====\n")
            log_file.flush()
            started = time.monotonic()
            if dry_run:
                finished = _run_forked(name, work, result_file, log_path, timeout)
            else:
                finished = _run_fresh(name, work, result_file, log_file, timeout)
            if not finished:
                records[name] = {"status": "timeout", "seconds": round(timeout, 1)}
            elif result_file.exists():
                records[name] = json.loads(result_file.read_text(encoding="utf-8"))
            else:
                records[name] = {
                    "status": "failed",
                    "error": "the part's process died without a result (see gpu_check.log)",
                    "seconds": round(time.monotonic() - started, 1),
                }
            if finished:
                print(
                    f"{name}: {records[name]['status']} ({records[name]['seconds']} s)", flush=True
                )
    shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine(), "dry_run": dry_run, "budget_s": budget, "parts": records}
    with atomic_path(out / "gpu_check.json") as temporary:
        temporary.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_path(out / "gpu_check.md") as temporary:
        temporary.write_text(markdown(report), encoding="utf-8")
    return report


def machine() -> dict[str, Any]:
    import datasets
    import peft
    import pyarrow
    import transformers

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load": [round(value, 2) for value in os.getloadavg()],
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception as error:  # a native library fails to import in many ways
        info["bitsandbytes"] = f"unavailable: {type(error).__name__}"
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = properties.name
        info["gpu_memory_mb"] = round(properties.total_memory / MB)
        info["compute_capability"] = f"{properties.major}.{properties.minor}"
    return info


def markdown(report: dict[str, Any]) -> str:
    """The training parts as one table, the other parts one line each."""
    machine_line = ", ".join(f"{key} {value}" for key, value in report["machine"].items())
    lines = [
        f"# GPU check{' (dry run, CPU)' if report['dry_run'] else ''}",
        "",
        machine_line,
        "",
        "| part | status | s | weights, dtype | seq | micro x acc | tokens/s | MFU | allocated MB "
        "| reserved MB | estimate MB | est/alloc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    others = []
    for name, record in report["parts"].items():
        if name.startswith("train_") and record["status"] == "ok":
            cells = [
                name, "ok", record["seconds"], f"{record['quantization']}, {record['dtype']}",
                record["seq_len"],
                f"{record['micro_batch']} x {record['accumulation']}", record["tokens_per_s"],
                record["mfu"], record.get("max_allocated_mb", record.get("max_rss_mb")),
                record.get("max_reserved_mb"), record["estimate_mb"],
                record.get("estimate_over_allocated"),
            ]  # fmt: skip
            lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
        else:
            details = {k: v for k, v in record.items() if k not in ("status", "seconds")}
            others.append(
                f"- **{name}**: {record['status']} ({record.get('seconds', '?')} s) "
                f"{json.dumps(details, default=str)[:600]}"
            )
    return "\n".join([*lines, "", *others, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for gpu_check.json/.md/.log")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument(
        "--budget", type=float, help="seconds for all parts (default 480; 7200 in a dry run)"
    )
    parser.add_argument("--part", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        run_part(args.part, args.work, args.dry_run, args.result)
        return
    if args.out is None:
        parser.error("--out DIR is required")
    parts = [name for name in args.parts.split(",") if name]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device is visible; use --dry-run on a CPU")
    budget = args.budget or (7200 if args.dry_run else 480)
    report = run_all(args.out, parts, args.dry_run, budget)
    print((args.out / "gpu_check.md").read_text(encoding="utf-8"))
    raise SystemExit(0 if all(r["status"] == "ok" for r in report["parts"].values()) else 1)


if __name__ == "__main__":
    main()
