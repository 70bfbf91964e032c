"""The training recipe: LoRA/QLoRA on packed blocks, resumable, with memory-aware batching.

In torchtune's recipe shape, each phase a short function:

1. **setup** (:func:`setup`): settings (the config's ``train:`` with the model entry's keys,
   :mod:`repotune.train.settings`), process group, device and dtype, blocks, schedule length,
   the checkpoint hash, and the base written to ``results/{model}/base/``;
2. **attempt** (:func:`_start_session`): seed, base loaded (quantized or not) with LoRA on the
   resolved targets (:mod:`repotune.train.lora`; a random base also trains its embeddings),
   AdamW, warmup then cosine/constant (:mod:`repotune.train.schedule`), the last checkpoint
   restored, the micro-batch the memory estimate fits (:mod:`repotune.train.memory`);
3. **train** (:func:`_train_loop`): optimizer steps; after each, validation, best-adapter
   keeping, log rows and checkpoints as due (:mod:`repotune.train.bookkeeping`). CUDA
   out-of-memory discards the attempt and starts another at half the micro-batch, twice the
   accumulation, from the last checkpoint;
4. **save** (:mod:`repotune.train.outputs`): the adapter directory, written atomically;
5. **cleanup** (:func:`main`): leave the process group.

The same recipe trains every parameter of a base built from config when the request's
``method`` is ``full`` (the base pretrained here, repotune.pretrain): no LoRA, fp32 weights,
checkpoints of the whole model (repotune.train.trained).

The loss is the token-level cross entropy summed over an optimizer step's micro-batches and
divided by that step's label count, so the gradient does not depend on how the step is split
into micro-batches (or processes).
"""

import gc
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import get_peft_model, prepare_model_for_kbit_training
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repotune.errors import InputError
from repotune.hardware import compute_dtype, detect, dtype_name
from repotune.modeling import base_source, load_model, model_shape, write_base
from repotune.models import resolve_model
from repotune.shards.torch_blocks import load_blocks
from repotune.train import checkpoint, distributed, memory, outputs, schedule, trained, training_log
from repotune.train.bookkeeping import after_step, loss_sum, save_checkpoint
from repotune.train.data import BlockOrder
from repotune.train.lora import (
    embedding_modules,
    lora_config,
    resolve_targets,
    targets_are_conv1d,
    trainable_parameters,
)
from repotune.train.run import (
    AdaptedModel,
    BatchPlan,
    Progress,
    Run,
    Session,
    TrainRequest,
)
from repotune.train.settings import TrainSettings

__all__ = ["Hooks", "TrainRequest", "train"]
log = logging.getLogger(__name__)


@dataclass
class Hooks:
    """Test seams. ``stop_after_steps`` ends this process after that many optimizer steps (an
    interruption at a step boundary); ``before_micro_batch(step, micro_batch)`` runs before
    every forward pass (a test raises a simulated OOM from it); ``on_trained(model)`` sees the
    trained model before it is saved."""

    stop_after_steps: int | None = None
    before_micro_batch: Callable[[int, int], None] | None = None
    on_trained: Callable[[torch.nn.Module], None] | None = None


def seed_everything(seed: int) -> None:
    """One seed for python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(request: TrainRequest, hooks: Hooks | None = None) -> dict[str, Any] | None:
    """Train an adapter (or, with ``request.method`` full, the whole model) as ``request``
    says; returns the training summary (None on processes
    other than rank 0, and when ``hooks.stop_after_steps`` interrupted the run)."""
    hooks = hooks or Hooks()
    run = setup(request)
    forced: tuple[int, int] | None = None
    backoffs = 0
    while True:
        session = None
        try:
            session, progress = _start_session(run, forced)
            if not _train_loop(run, session, progress, hooks):
                return None
        except torch.OutOfMemoryError as error:
            if session is None:
                raise
            plan, session = session.plan, None  # let the failed attempt's tensors go
            forced = _back_off(run, plan, error)
            backoffs += 1
            continue
        if run.rank != 0:
            return None
        if hooks.on_trained is not None:
            hooks.on_trained(session.model)
        return outputs.write(run, session, progress, backoffs)


def setup(request: TrainRequest) -> Run:
    """Everything fixed for the run; rank 0 also resets stale state and writes the base."""
    if request.method not in trained.METHODS:
        raise InputError(
            "train request", f"method '{request.method}' is unknown", "use lora or full"
        )
    spec = resolve_model(request.model)
    settings = TrainSettings.for_model(request.settings, spec)
    rank, world = distributed.init(settings.num_gpus)
    hardware = detect(use_gpu=settings.num_gpus != 0, device_index=distributed.local_rank())
    device = torch.device(f"cuda:{distributed.local_rank()}" if hardware.kind == "cuda" else "cpu")
    if settings.quantization != "none" and hardware.kind == "cpu":
        log.info("quantization %s on CPU: bitsandbytes' CPU kernels (slow)", settings.quantization)
    dtype = compute_dtype(hardware, settings.compute_dtype)
    shards = Path(request.shards_dir)
    train_blocks, validation = load_blocks(shards / "train"), load_blocks(shards / "validation")
    if len(train_blocks) == 0:
        raise InputError(f"shards '{shards / 'train'}'", "hold no blocks", "check the curate stage")
    tokenizer = AutoTokenizer.from_pretrained(request.tokenizer_dir)
    epochs = schedule.epochs_for(
        train_blocks.tokens, settings.target_tokens, settings.min_epochs, settings.max_epochs
    )
    total = schedule.total_steps(epochs, len(train_blocks), settings.batch_size, settings.max_steps)
    warmup = schedule.warmup_steps(
        total, settings.warmup_ratio, settings.warmup_steps_min, settings.warmup_steps_max
    )
    context = {
        "model": request.model,
        "method": request.method,
        "train": train_blocks.dataset._fingerprint,
        "validation": validation.dataset._fingerprint,
        "tokenizer_size": len(tokenizer),
        "world": world,
    }
    run = Run(
        request=request, spec=spec, settings=settings, hardware=hardware, device=device,
        dtype=dtype, rank=rank, world=world, tokenizer=tokenizer, train=train_blocks,
        validation=validation,
        order=BlockOrder(train_blocks.weights, settings.seed, settings.weighted_sampling),
        epochs=epochs, total_steps=total, warmup=warmup,
        config_hash=checkpoint.config_hash(settings.raw, context),
        state_dir=Path(request.state_dir),
    )  # fmt: skip
    if rank == 0:
        if checkpoint.load(run.state_dir / "checkpoint", run.config_hash) is None:
            checkpoint.reset(run.state_dir)
        seed_everything(settings.seed)
        write_base(
            spec, request.base_dir, len(tokenizer), train_blocks.seq_len, _special(tokenizer)
        )
    distributed.barrier(world)
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


def _start_session(run: Run, forced: tuple[int, int] | None) -> tuple[Session, Progress]:
    """Build the model, optimizer and schedule, restore the last checkpoint if any, and plan
    the micro-batch (``forced`` after an out-of-memory back-off)."""
    seed_everything(run.settings.seed)
    adapted = _build_model(run)
    optimizer = _optimizer(run, adapted.model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, schedule.lr_factor(run.settings.lr_schedule, run.warmup, run.total_steps)
    )
    saved = checkpoint.load(run.state_dir / "checkpoint", run.config_hash)
    progress, resumed = Progress(), None
    if saved is not None:
        trained.restore(adapted.model, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        checkpoint.set_rng_state(saved["rng"])
        progress = Progress.from_state(saved["state"])
        resumed = (saved["state"]["micro_batch"], saved["state"]["accumulation"])
        log.info("resuming from the checkpoint at step %d", progress.step)
    plan = _plan_batch(run, adapted, forced, resumed)
    if run.rank == 0:
        training_log.trim(run.state_dir, progress.step)
    session = Session(
        adapted=adapted,
        ddp=distributed.wrap(adapted.model, run.world, run.device),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=run.dtype == torch.float16),
        plan=plan,
    )
    return session, progress


def _back_off(run: Run, plan: BatchPlan, error: BaseException) -> tuple[int, int]:
    """After an out-of-memory error: half the micro-batch, twice the accumulation."""
    micro, accumulation = plan.micro_batch, plan.accumulation
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
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return micro // 2, accumulation * 2


def _build_model(run: Run) -> AdaptedModel:
    """The base with LoRA attached, trainable parameters in fp32 (or, for ``method: full``,
    the whole model, :func:`_full_model`)."""
    if run.request.method == trained.FULL:
        return _full_model(run)
    settings = run.settings
    model = load_model(
        base_source(run.request.base_dir),
        quantization=settings.quantization,
        dtype=run.dtype,
        device=run.device,
        trust_remote_code=settings.trust_remote_code,
    )
    _check_vocabulary(run, model.get_input_embeddings().num_embeddings)
    checkpointing = settings.gradient_checkpointing_on
    kwargs = {"use_reentrant": False}
    if settings.quantization != "none":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=kwargs
        )
    elif checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    targets = resolve_targets(model, settings.lora_targets, run.spec.family)
    trained_in_full = embedding_modules(model) if run.spec.base is None else []
    torch.manual_seed(settings.seed)
    config = lora_config(
        targets,
        settings.lora_r,
        settings.lora_alpha,
        settings.lora_dropout,
        fan_in_fan_out=targets_are_conv1d(model, targets),
        modules_to_save=trained_in_full or None,
    )
    model = get_peft_model(model, config)
    return AdaptedModel(
        model=model,
        targets=targets,
        trained_in_full=trained_in_full,
        trainable_params=trainable_parameters(model),
        gradient_checkpointing=checkpointing,
    )


def _full_model(run: Run) -> AdaptedModel:
    """The base with every parameter trained: weights in fp32 (the compute dtype is autocast's,
    repotune.packed), so small updates are not rounded away as they would be in bf16 weights."""
    settings = run.settings
    if settings.quantization != "none":
        raise InputError(
            f"training {run.spec.name} in full",
            f"cannot update {settings.quantization}-quantized weights",
            "set quantization: none",
        )
    model = load_model(
        base_source(run.request.base_dir),
        quantization="none",
        dtype=torch.float32,
        device=run.device,
        trust_remote_code=settings.trust_remote_code,
    )
    _check_vocabulary(run, model.get_input_embeddings().num_embeddings)
    checkpointing = settings.gradient_checkpointing_on
    if checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    model.requires_grad_(True)
    return AdaptedModel(
        model=model,
        targets=[],
        trained_in_full=["all parameters"],
        trainable_params=trainable_parameters(model),
        gradient_checkpointing=checkpointing,
    )


def _check_vocabulary(run: Run, embeddings: int) -> None:
    if len(run.tokenizer) > embeddings:
        raise InputError(
            f"tokenizer '{run.request.tokenizer_dir}'",
            f"has {len(run.tokenizer)} tokens but the model's embedding only {embeddings}",
            "tokenize with the model's own tokenizer (no added tokens)",
        )


def _plan_batch(
    run: Run,
    adapted: AdaptedModel,
    forced: tuple[int, int] | None,
    resumed: tuple[int, int] | None,
) -> BatchPlan:
    """Micro-batch and accumulation: forced by an OOM back-off, set in the config, or the
    largest that the estimate fits; never larger than the checkpoint's we resume from."""
    settings = run.settings
    budget = (
        settings.max_memory_gb * memory.GIB
        if settings.max_memory_gb > 0
        else run.hardware.memory_bytes * settings.memory_safety_margin
    )
    shape = model_shape(adapted.model)

    def estimate(size: int) -> memory.MemoryEstimate:
        return memory.estimate(
            shape,
            quantization=settings.quantization,
            dtype_bytes=torch.finfo(run.dtype).bits // 8,
            lora_params=adapted.trainable_params,
            micro_batch=size,
            seq_len=run.train.seq_len,
            checkpointing=adapted.gradient_checkpointing,
            optimizer=settings.optimizer,
            materialised_attention=run.hardware.kind == "cpu",
            dropout_mask_bytes=1 if run.hardware.kind == "cuda" else memory.FP32,
            overhead=512 * 1024**2 if run.hardware.kind == "cuda" else 0,
        )

    if forced is not None:
        micro, accumulation = forced
    elif settings.micro_batch_size > 0:
        share = -(-run.effective_batch // run.world)
        micro = min(settings.micro_batch_size, share)
        accumulation = -(-share // micro)
    else:
        micro, accumulation = memory.pick_batch(
            lambda size: estimate(size).total <= budget, run.effective_batch, run.world
        )
    if resumed is not None and resumed[0] < micro:
        micro, accumulation = resumed
    chosen = estimate(micro)
    log.info(
        "micro-batch %d x accumulation %d x %d process(es) (estimate %.2f GiB of %.2f GiB)",
        micro, accumulation, run.world, chosen.total / memory.GIB, budget / memory.GIB,
    )  # fmt: skip
    return BatchPlan(micro, accumulation, chosen.as_dict(), int(budget))


def _optimizer(run: Run, model: torch.nn.Module) -> torch.optim.Optimizer:
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    settings = run.settings
    if settings.optimizer == "paged_adamw_8bit":
        if run.hardware.kind != "cuda":
            raise InputError(
                "config train.optimizer", "paged_adamw_8bit needs a CUDA GPU", "use adamw"
            )
        import bitsandbytes

        return bitsandbytes.optim.PagedAdamW8bit(
            parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    return torch.optim.AdamW(
        parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )


def _train_loop(run: Run, session: Session, progress: Progress, hooks: Hooks) -> bool:
    """Optimizer steps to the end; False when ``hooks.stop_after_steps`` stopped it first."""
    session.model.train()
    trainable = [parameter for parameter in session.model.parameters() if parameter.requires_grad]
    bar = tqdm(
        total=run.total_steps, initial=progress.step, file=sys.stderr, desc="train",
        mininterval=10, disable=run.rank != 0,
    )  # fmt: skip
    steps_here = 0
    with bar:
        while progress.step < run.total_steps:
            started = time.perf_counter()
            loss, tokens = _train_step(run, session, hooks, progress.step)
            session.scaler.unscale_(session.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, run.settings.max_grad_norm)
            session.scaler.step(session.optimizer)
            session.scaler.update()
            session.scheduler.step()
            session.optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.tokens += tokens
            steps_here += 1
            window = progress.window
            window.loss += loss
            window.tokens += tokens
            window.steps += 1
            window.seconds += time.perf_counter() - started
            bar.update(1)
            after_step(run, session, progress, float(grad_norm))
            stop = hooks.stop_after_steps
            if stop is not None and steps_here >= stop and progress.step < run.total_steps:
                save_checkpoint(run, session, progress)
                return False
    return True


def _train_step(run: Run, session: Session, hooks: Hooks, step: int) -> tuple[float, int]:
    """Forward and backward over one optimizer step's blocks (this process's share). fp16
    gradients of small LoRA updates underflow, so the loss goes through the scaler (a no-op for
    bf16 and fp32).

    Returns the step's mean loss over all processes' label tokens and its real token count.
    """
    blocks = run.order.step(step, run.effective_batch)
    micro = session.plan.micro_batch
    mine = blocks[run.rank :: run.world]
    batches = [run.train.batch(mine[start : start + micro]) for start in range(0, len(mine), micro)]
    labels = sum(int((batch["labels"] != -100).sum()) for batch in batches)
    labels_all = distributed.all_reduce_sum(labels, run.world, run.device)
    total = 0.0
    for index, batch in enumerate(batches):
        if hooks.before_micro_batch is not None:
            hooks.before_micro_batch(step, len(batch["input_ids"]))
        last = index == len(batches) - 1
        with distributed.no_sync(session.ddp, not last):
            summed = loss_sum(session.ddp, batch, run.device, run.dtype)
            # DDP averages gradients over processes; scale so the result is the global mean.
            session.scaler.scale(summed * run.world / max(labels_all, 1)).backward()
        total += summed.item()
    tokens = int(run.train.lengths[blocks].sum())
    return distributed.all_reduce_sum(total, run.world, run.device) / max(labels_all, 1), tokens


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
        distributed.shutdown()


if __name__ == "__main__":
    main()
