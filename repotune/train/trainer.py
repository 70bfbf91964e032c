"""The training loop: LoRA/QLoRA on packed blocks, resumable, with memory-aware batching.

A run, in order (each step a short function below):

1. **settings**: the config's ``train:`` section with the model preset's ``train:`` over it;
2. **seed** python, numpy and torch (LoRA initialisation and dropout follow torch's seed; data
   order is a pure function of the seed, see :mod:`repotune.train.data`);
3. **base**: build or locate it (:mod:`repotune.modeling`), load it quantized or not, prepare
   it for k-bit training, wrap it with LoRA on the resolved targets (:mod:`repotune.train.lora`);
4. **batching**: the largest micro-batch the memory estimate fits in the budget
   (:mod:`repotune.train.memory`), gradient accumulation up to the effective batch;
5. **loop**: AdamW, warmup then cosine/constant (:mod:`repotune.train.schedule`), clipping,
   validation every ``eval_interval`` steps, checkpoints every ``checkpoint_interval``
   (:mod:`repotune.train.checkpoint`); CUDA out-of-memory halves the micro-batch, doubles the
   accumulation and continues from the last checkpoint;
6. **outputs**: the adapter directory (best and last adapters, tokenizer, log, model card,
   summary), written atomically.

The loss is the token-level cross entropy summed over an optimizer step's micro-batches and
divided by that step's label count, so the gradient does not depend on how the step is split
into micro-batches (or processes).
"""

import csv
import gc
import json
import logging
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from peft import (
    get_peft_model,
    get_peft_model_state_dict,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repotune.atomic import atomic_path
from repotune.errors import InputError
from repotune.hardware import Hardware, compute_dtype, detect, dtype_name
from repotune.modeling import SUMMARY_FILE, base_source, load_model, model_shape, write_base
from repotune.models import ModelSpec, resolve_model, with_overrides
from repotune.train import checkpoint, memory, schedule
from repotune.train.data import BlockOrder, Blocks, load_blocks
from repotune.train.lora import (
    embedding_modules,
    lora_config,
    resolve_targets,
    targets_are_conv1d,
    trainable_parameters,
)
from repotune.train.model_card import model_card

log = logging.getLogger(__name__)
BUILT_BASE_NOTE = "untrained (random initialisation); embeddings trained with the adapter"
LOG_FIELDS = (
    "step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "peak_memory_mb",
    "val_loss", "micro_batch", "accumulation",
)  # fmt: skip


@dataclass(frozen=True)
class TrainRequest:
    """Everything a training run needs; JSON-ready so ``accelerate launch`` can pass it on."""

    model: str | dict[str, Any]
    shards_dir: str
    tokenizer_dir: str
    adapter_dir: str
    base_dir: str
    state_dir: str
    settings: dict[str, Any]


@dataclass
class Hooks:
    """Test seams. ``stop_after_steps`` ends this process after that many optimizer steps (an
    interruption at a step boundary); ``before_micro_batch(step, micro_batch)`` runs before
    every forward pass (a test raises a simulated OOM from it); ``on_trained(model)`` sees the
    trained model before it is saved."""

    stop_after_steps: int | None = None
    before_micro_batch: Callable[[int, int], None] | None = None
    on_trained: Callable[[torch.nn.Module], None] | None = None


@dataclass
class Run:
    """What is fixed for the whole run, whatever happens to the micro-batch."""

    request: TrainRequest
    spec: ModelSpec
    settings: dict[str, Any]
    hardware: Hardware
    device: torch.device
    dtype: torch.dtype
    rank: int
    world: int
    tokenizer: PreTrainedTokenizerBase
    train: Blocks
    validation: Blocks
    order: BlockOrder
    epochs: int
    total_steps: int
    warmup: int
    effective_batch: int
    config_hash: str
    state_dir: Path
    facts: dict[str, Any] = field(default_factory=dict)


def effective_settings(config_train: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The config's train settings with the model entry's ``train:`` overrides applied."""
    return with_overrides(spec, "train", config_train)


def seed_everything(seed: int) -> None:
    """One seed for python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(request: TrainRequest, hooks: Hooks | None = None) -> dict[str, Any] | None:
    """Train an adapter as ``request`` says; returns the training summary (None on processes
    other than rank 0, and when ``hooks.stop_after_steps`` interrupted the run)."""
    hooks = hooks or Hooks()
    run = _setup(request)
    micro, accumulation = 0, 0
    while True:
        try:
            return _train_from_checkpoint(run, hooks, micro, accumulation)
        except torch.OutOfMemoryError as error:
            micro, accumulation = _back_off(run, error)


def _setup(request: TrainRequest) -> Run:
    spec = resolve_model(request.model)
    settings = effective_settings(request.settings, spec)
    rank, world = _init_distributed(settings)
    hardware = detect(use_gpu=settings["num_gpus"] != 0, device_index=_local_rank())
    device = torch.device(f"cuda:{_local_rank()}" if hardware.kind == "cuda" else "cpu")
    if settings["quantization"] != "none" and hardware.kind == "cpu":
        log.info(
            "quantization %s on CPU: bitsandbytes' CPU kernels (slow)", settings["quantization"]
        )
    dtype = compute_dtype(hardware, settings["compute_dtype"])
    shards = Path(request.shards_dir)
    train_blocks = load_blocks(shards / "train")
    validation = load_blocks(shards / "validation")
    if len(train_blocks) == 0:
        raise InputError(f"shards '{shards / 'train'}'", "hold no blocks", "check the curate stage")
    tokenizer = AutoTokenizer.from_pretrained(request.tokenizer_dir)
    effective_batch = settings["batch_size"]
    epochs = schedule.epochs_for(
        train_blocks.tokens,
        settings["target_tokens"],
        settings["min_epochs"],
        settings["max_epochs"],
    )
    total = schedule.total_steps(epochs, len(train_blocks), effective_batch, settings["max_steps"])
    warmup = schedule.warmup_steps(
        total, settings["warmup_ratio"], settings["warmup_steps_min"], settings["warmup_steps_max"]
    )
    context = {
        "model": request.model,
        "train": train_blocks.dataset._fingerprint,
        "validation": validation.dataset._fingerprint,
        "tokenizer_size": len(tokenizer),
        "world": world,
    }
    state_dir = Path(request.state_dir)
    run = Run(
        request=request, spec=spec, settings=settings, hardware=hardware, device=device,
        dtype=dtype, rank=rank, world=world, tokenizer=tokenizer, train=train_blocks,
        validation=validation,
        order=BlockOrder(train_blocks.weights, settings["seed"], settings["weighted_sampling"]),
        epochs=epochs, total_steps=total, warmup=warmup, effective_batch=effective_batch,
        config_hash=checkpoint.config_hash(settings, context), state_dir=state_dir,
    )  # fmt: skip
    if rank == 0:
        if checkpoint.load(state_dir / "checkpoint", run.config_hash) is None:
            checkpoint.reset(state_dir)
        seed_everything(settings["seed"])
        write_base(
            spec, request.base_dir, len(tokenizer), train_blocks.seq_len, _special(tokenizer)
        )
    _barrier(run)
    log.info(
        "device %s, dtype %s, %d blocks of %d tokens (%d real), %d epochs, %d steps, warmup %d",
        hardware.as_dict(), dtype_name(dtype), len(train_blocks), train_blocks.seq_len,
        train_blocks.tokens, epochs, total, warmup,
    )  # fmt: skip
    return run


def _special(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("tokenizer", "has no end-of-sequence token", "rerun the tokenize rule")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    return {"eos_token_id": eos, "pad_token_id": pad, "bos_token_id": bos}


def _back_off(run: Run, error: BaseException) -> tuple[int, int]:
    """After an out-of-memory error: half the micro-batch, twice the accumulation."""
    micro, accumulation = run.facts["micro_batch"], run.facts["accumulation"]
    if micro <= 1:
        raise InputError(
            f"training {run.spec.name}",
            "runs out of memory even at micro-batch 1",
            "use quantization: nf4, gradient_checkpointing: on, or a shorter seq_len",
        ) from error
    log.warning(
        "out of memory at micro-batch %d: retrying at %d with accumulation %d from the last "
        "checkpoint",
        micro, micro // 2, accumulation * 2,
    )  # fmt: skip
    run.facts["oom_backoffs"] = run.facts.get("oom_backoffs", 0) + 1
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return micro // 2, accumulation * 2


def _build_model(run: Run) -> torch.nn.Module:
    """The base with LoRA attached, trainable parameters in fp32."""
    settings = run.settings
    quantized = settings["quantization"] != "none"
    model = load_model(
        base_source(run.request.base_dir),
        quantization=settings["quantization"],
        dtype=run.dtype,
        device=run.device,
        trust_remote_code=settings["trust_remote_code"],
    )
    _check_vocabulary(run, model.get_input_embeddings().num_embeddings)
    checkpointing = {"auto": quantized, "on": True, "off": False}[
        settings["gradient_checkpointing"]
    ]
    kwargs = {"use_reentrant": False}
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=kwargs
        )
    elif checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    targets = resolve_targets(model, settings["lora_targets"], run.spec.family)
    trained_in_full = embedding_modules(model) if run.spec.base is None else []
    torch.manual_seed(settings["seed"])
    model = get_peft_model(
        model,
        lora_config(
            targets,
            settings["lora_r"],
            settings["lora_alpha"],
            settings["lora_dropout"],
            fan_in_fan_out=targets_are_conv1d(model, targets),
            modules_to_save=trained_in_full or None,
        ),
    )
    run.facts.update(
        targets=targets,
        trained_in_full=trained_in_full,
        trainable_params=trainable_parameters(model),
        gradient_checkpointing=checkpointing,
    )
    return model


def _check_vocabulary(run: Run, embeddings: int) -> None:
    if len(run.tokenizer) > embeddings:
        raise InputError(
            f"tokenizer '{run.request.tokenizer_dir}'",
            f"has {len(run.tokenizer)} tokens but the model's embedding only {embeddings}",
            "tokenize with the model's own tokenizer (no added tokens)",
        )


def _pick_batch(run: Run, model: torch.nn.Module, micro: int, accumulation: int) -> None:
    """Choose micro-batch and accumulation: forced by the caller (OOM back-off), set in the
    config, resumed from a checkpoint, or the largest that the estimate fits."""
    settings = run.settings
    shape = model_shape(model)
    budget = (
        settings["max_memory_gb"] * memory.GIB
        if settings["max_memory_gb"] > 0
        else run.hardware.memory_bytes * settings["memory_safety_margin"]
    )

    def estimate(size: int) -> memory.MemoryEstimate:
        return memory.estimate(
            shape,
            quantization=settings["quantization"],
            dtype_bytes=torch.finfo(run.dtype).bits // 8,
            lora_params=run.facts["trainable_params"],
            micro_batch=size,
            seq_len=run.train.seq_len,
            checkpointing=run.facts["gradient_checkpointing"],
            optimizer=settings["optimizer"],
            materialised_attention=run.hardware.kind == "cpu",
            overhead=512 * 1024**2 if run.hardware.kind == "cuda" else 0,
        )

    if not micro:
        share = -(-run.effective_batch // run.world)
        if settings["micro_batch_size"] > 0:
            micro = min(settings["micro_batch_size"], share)
            accumulation = -(-share // micro)
        else:
            micro, accumulation = memory.pick_batch(
                lambda size: estimate(size).total <= budget, run.effective_batch, run.world
            )
    resumed = run.facts.get("resumed_micro_batch")
    if resumed and resumed < micro:
        micro, accumulation = resumed, run.facts["resumed_accumulation"]
    run.facts.update(
        micro_batch=micro,
        accumulation=accumulation,
        memory_estimate=estimate(micro).as_dict(),
        memory_budget=int(budget),
    )
    log.info(
        "micro-batch %d x accumulation %d x %d process(es) (estimate %.2f GiB of %.2f GiB)",
        micro, accumulation, run.world, estimate(micro).total / memory.GIB, budget / memory.GIB,
    )  # fmt: skip


def _optimizer(run: Run, model: torch.nn.Module) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    settings = run.settings
    if settings["optimizer"] == "paged_adamw_8bit":
        if run.hardware.kind != "cuda":
            raise InputError(
                "config train.optimizer", "paged_adamw_8bit needs a CUDA GPU", "use adamw"
            )
        import bitsandbytes

        return bitsandbytes.optim.PagedAdamW8bit(
            parameters, lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
        )
    return torch.optim.AdamW(
        parameters, lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
    )


def _train_from_checkpoint(
    run: Run, hooks: Hooks, micro: int, accumulation: int
) -> dict[str, Any] | None:
    """Build everything, restore the last checkpoint if any, and train to the end."""
    seed_everything(run.settings["seed"])
    model = _build_model(run)
    optimizer = _optimizer(run, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule.lr_factor(run.settings["lr_schedule"], run.warmup, run.total_steps)
    )
    saved = checkpoint.load(run.state_dir / "checkpoint", run.config_hash)
    progress = {"step": 0, "tokens": 0, "best_val_loss": None, "best_step": None, "seconds": 0.0}
    if saved is not None:
        set_peft_model_state_dict(model, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        checkpoint.set_rng_state(saved["rng"])
        progress.update({key: saved["state"][key] for key in progress})
        run.facts["resumed_micro_batch"] = saved["state"]["micro_batch"]
        run.facts["resumed_accumulation"] = saved["state"]["accumulation"]
        log.info("resuming from the checkpoint at step %d", progress["step"])
    _pick_batch(run, model, micro, accumulation)
    _trim_log(run, progress["step"])
    ddp = _wrap_distributed(run, model)
    scaler = torch.amp.GradScaler("cuda", enabled=run.dtype == torch.float16)
    model.train()
    bar = tqdm(
        total=run.total_steps, initial=progress["step"], file=sys.stderr, desc="train",
        mininterval=10, disable=run.rank != 0,
    )  # fmt: skip
    window = _new_window()
    steps_this_process = 0
    while progress["step"] < run.total_steps:
        step = progress["step"]
        started = time.perf_counter()
        loss, tokens = _train_step(run, hooks, ddp, scaler, step)
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [parameter for parameter in model.parameters() if parameter.requires_grad],
            run.settings["max_grad_norm"],
        )
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress["step"] = step + 1
        progress["tokens"] += tokens
        steps_this_process += 1
        window["loss"] += loss
        window["tokens"] += tokens
        window["steps"] += 1
        window["seconds"] += time.perf_counter() - started
        bar.update(1)
        done = progress["step"] == run.total_steps
        val_loss = None
        interval = run.settings["eval_interval"]
        if done or (interval > 0 and progress["step"] % interval == 0):
            val_loss = _validate(run, model)
            _keep_best(run, model, progress, val_loss)
        if done or progress["step"] % run.settings["logging_steps"] == 0 or val_loss is not None:
            progress["seconds"] += window["seconds"]
            _log_row(run, progress, window, float(grad_norm), scheduler, val_loss)
            window = _new_window()
        interval = run.settings["checkpoint_interval"]
        if done or (interval > 0 and progress["step"] % interval == 0):
            _save_checkpoint(run, model, optimizer, scheduler, progress)
        stop = hooks.stop_after_steps
        if stop is not None and steps_this_process >= stop and not done:
            _save_checkpoint(run, model, optimizer, scheduler, progress)
            bar.close()
            return None
    bar.close()
    if run.rank != 0:
        return None
    if hooks.on_trained is not None:
        hooks.on_trained(_unwrap(model))
    return _write_outputs(run, model, progress)


def _new_window() -> dict[str, Any]:
    """Running sums between two log rows; ``seconds`` counts training time only (no eval)."""
    return {"loss": 0.0, "tokens": 0, "steps": 0, "seconds": 0.0}


def _train_step(
    run: Run, hooks: Hooks, model: torch.nn.Module, scaler: torch.amp.GradScaler, step: int
) -> tuple[float, int]:
    """Forward and backward over one optimizer step's blocks (this process's share). fp16
    gradients of small LoRA updates underflow, so the loss goes through ``scaler`` (a no-op for
    bf16 and fp32).

    Returns the step's mean loss over all processes' label tokens and its real token count.
    """
    blocks = run.order.step(step, run.effective_batch)
    micro = run.facts["micro_batch"]
    mine = blocks[run.rank :: run.world]
    batches = [run.train.batch(mine[start : start + micro]) for start in range(0, len(mine), micro)]
    labels = sum(int((batch["labels"] != -100).sum()) for batch in batches)
    labels_all = _all_reduce_sum(run, labels)
    total = 0.0
    for index, batch in enumerate(batches):
        if hooks.before_micro_batch is not None:
            hooks.before_micro_batch(step, len(batch["input_ids"]))
        last = index == len(batches) - 1
        with _no_sync(model, not last):
            loss_sum = _loss_sum(model, batch, run.device, run.dtype)
            # DDP averages gradients over processes; scale so the result is the global mean.
            scaled = loss_sum * run.world / max(labels_all, 1)
            scaler.scale(scaled).backward()
        total += loss_sum.item()
    tokens = int(run.train.lengths[blocks].sum())
    return _all_reduce_sum(run, total) / max(labels_all, 1), tokens


def _loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Summed next-token cross entropy over the label tokens (fp32 logits)."""
    input_ids = batch["input_ids"].to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        output = model(
            input_ids=input_ids, position_ids=batch["position_ids"].to(device), use_cache=False
        )
    logits = output.logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


@torch.no_grad()
def _validate(run: Run, model: torch.nn.Module) -> float | None:
    """Mean validation loss per label token (on at most ``eval_max_blocks`` blocks)."""
    count = len(run.validation)
    if count == 0:
        return None
    limit = run.settings["eval_max_blocks"]
    indices = list(range(min(count, limit) if limit > 0 else count))
    micro = run.facts["micro_batch"]
    model.eval()
    loss, labels = 0.0, 0
    for start in range(0, len(indices), micro):
        batch = run.validation.batch(indices[start : start + micro])
        loss += float(_loss_sum(model, batch, run.device, run.dtype))
        labels += int((batch["labels"][:, 1:] != -100).sum())
    model.train()
    return loss / max(labels, 1)


def _keep_best(
    run: Run, model: torch.nn.Module, progress: dict[str, Any], val_loss: float | None
) -> None:
    if val_loss is None or run.rank != 0:
        return
    best = progress["best_val_loss"]
    if best is None or val_loss < best:
        progress["best_val_loss"], progress["best_step"] = val_loss, progress["step"]
        with atomic_path(run.state_dir / "best") as temporary:
            _unwrap(model).save_pretrained(temporary)


def _log_row(
    run: Run,
    progress: dict[str, Any],
    window: dict[str, Any],
    grad_norm: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    val_loss: float | None,
) -> None:
    if run.rank != 0:
        return
    row = {
        "step": progress["step"],
        "epoch": round(progress["step"] * run.effective_batch / len(run.train), 4),
        "loss": round(window["loss"] / max(window["steps"], 1), 6),
        "lr": f"{scheduler.get_last_lr()[0]:.3e}",
        "grad_norm": round(grad_norm, 6),
        "tokens": progress["tokens"],
        "tokens_per_s": round(window["tokens"] / max(window["seconds"], 1e-9), 1),
        "peak_memory_mb": round(_peak_memory_mb(run), 1),
        "val_loss": "" if val_loss is None else round(val_loss, 6),
        "micro_batch": run.facts["micro_batch"],
        "accumulation": run.facts["accumulation"],
    }
    path = run.state_dir / "training_log.csv"
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    log.info(" ".join(f"{key}={value}" for key, value in row.items() if value != ""))


def _trim_log(run: Run, step: int) -> None:
    """Drop log rows after the checkpoint we resume from (they will be redone)."""
    path = run.state_dir / "training_log.csv"
    if run.rank != 0 or not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _peak_memory_mb(run: Run) -> float:
    if run.device.type == "cuda":
        return torch.cuda.max_memory_allocated(run.device) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _save_checkpoint(
    run: Run,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, Any],
) -> None:
    if run.rank == 0:
        state = {
            **progress,
            "config_hash": run.config_hash,
            "micro_batch": run.facts["micro_batch"],
            "accumulation": run.facts["accumulation"],
        }
        adapter = get_peft_model_state_dict(_unwrap(model))
        checkpoint.save(
            run.state_dir / "checkpoint",
            adapter,
            optimizer.state_dict(),
            scheduler.state_dict(),
            state,
        )
    _barrier(run)


def _write_outputs(run: Run, model: torch.nn.Module, progress: dict[str, Any]) -> dict[str, Any]:
    """The adapter directory: best adapter at the top, ``last/``, tokenizer, log, card, summary."""
    final_loss = _last_train_loss(run)
    summary = {
        "model": run.spec.name,
        "base_model": base_source(run.request.base_dir),
        "steps": progress["step"],
        "epochs": run.epochs,
        "tokens": progress["tokens"],
        "train_blocks": len(run.train),
        "train_tokens": run.train.tokens,
        "validation_blocks": len(run.validation),
        "seq_len": run.train.seq_len,
        "final_train_loss": final_loss,
        "final_val_loss": _last_val_loss(run),
        "best_val_loss": progress["best_val_loss"],
        "best_step": progress["best_step"],
        "adapter": "best" if progress["best_step"] is not None else "last",
        "tokens_per_s": round(progress["tokens"] / max(progress["seconds"], 1e-9), 1),
        "train_seconds": round(progress["seconds"], 1),
        "base_training": BUILT_BASE_NOTE if run.spec.base is None else "pretrained",
        "resolved_targets": run.facts["targets"],
        "trained_in_full": run.facts["trained_in_full"],
        "trainable_params": run.facts["trainable_params"],
        "dtype": dtype_name(run.dtype),
        "quantization": run.settings["quantization"],
        "gradient_checkpointing": run.facts["gradient_checkpointing"],
        "micro_batch": run.facts["micro_batch"],
        "accumulation": run.facts["accumulation"],
        "world_size": run.world,
        "effective_batch": run.facts["micro_batch"] * run.facts["accumulation"] * run.world,
        "oom_backoffs": run.facts.get("oom_backoffs", 0),
        "memory_estimate_bytes": run.facts["memory_estimate"],
        "hardware": run.hardware.as_dict(),
        "settings": run.settings,
    }
    with atomic_path(run.request.adapter_dir) as temporary:
        unwrapped = _unwrap(model)
        unwrapped.save_pretrained(temporary / "last")
        best = run.state_dir / "best"
        source = best if progress["best_step"] is not None and best.is_dir() else temporary / "last"
        for item in source.iterdir():
            shutil.copy2(item, temporary / item.name)
        _point_at_base(temporary, summary["base_model"])
        _point_at_base(temporary / "last", summary["base_model"])
        run.tokenizer.save_pretrained(temporary)
        shutil.copy2(run.state_dir / "training_log.csv", temporary / "training_log.csv")
        (temporary / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
        (temporary / "README.md").write_text(model_card(summary), encoding="utf-8")
    log.info("adapter written to %s: %s", run.request.adapter_dir, json.dumps(summary)[:400])
    return summary


def _point_at_base(adapter_dir: Path, base: str) -> None:
    """Record the base every adapter was trained on in its adapter_config.json.

    peft keeps target_modules as a set, whose order changes with PYTHONHASHSEED; sorting it
    makes the file byte-identical across identical runs.
    """
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _log_rows(run: Run) -> list[dict[str, str]]:
    with open(run.state_dir / "training_log.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _last_train_loss(run: Run) -> float | None:
    rows = _log_rows(run)
    return float(rows[-1]["loss"]) if rows else None


def _last_val_loss(run: Run) -> float | None:
    values = [float(row["val_loss"]) for row in _log_rows(run) if row["val_loss"]]
    return values[-1] if values else None


# -- multi-process (DDP) helpers: no-ops in a single process ---------------------------------


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(settings: dict[str, Any]) -> tuple[int, int]:
    """Join the process group ``accelerate launch`` (torchrun) set up, if any."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and settings["num_gpus"] != 0 else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(_local_rank())
        dist.init_process_group(backend)
    return dist.get_rank(), world


def _wrap_distributed(run: Run, model: torch.nn.Module) -> torch.nn.Module:
    if run.world <= 1:
        return model
    ids = [run.device.index] if run.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _no_sync(model: torch.nn.Module, skip: bool) -> Any:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if skip and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _all_reduce_sum(run: Run, value: float) -> float:
    if run.world <= 1:
        return value
    tensor = torch.tensor([float(value)], device=run.device, dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())


def _barrier(run: Run) -> None:
    if run.world > 1:
        dist.barrier()


def main() -> None:
    """``python -m repotune.train.trainer REQUEST.json``: what ``accelerate launch`` runs."""
    request = TrainRequest(**json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        train(request)
    except InputError as error:
        print(f"repotune error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
