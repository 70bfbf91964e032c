"""What happens after each optimizer step besides the step itself: validation, keeping the
best adapter, the training-log row and checkpoints, each at its own interval."""

import dataclasses
import resource

import torch
import torch.nn.functional as F

from repotune.atomic import atomic_path
from repotune.packed import packed_logits
from repotune.shards.table import IGNORE
from repotune.train import checkpoint, distributed, trained, training_log
from repotune.train.run import Progress, Run, Session, Window


def loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Summed next-token cross entropy over the label tokens (fp32 logits)."""
    logits = packed_logits(model, batch, device, dtype)[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def _due(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


def after_step(run: Run, session: Session, progress: Progress, grad_norm: float) -> None:
    """Validate, keep the best adapter, log (opening a fresh log window) and checkpoint as
    due."""
    done = progress.step == run.total_steps
    settings = run.settings
    val_loss = None
    if done or _due(progress.step, settings.eval_interval):
        val_loss = validate(run, session.model, session.plan.micro_batch)
        keep_best(run, session.model, progress, val_loss)
    if done or progress.step % settings.logging_steps == 0 or val_loss is not None:
        progress.seconds += progress.window.seconds
        log_row(run, session, progress, grad_norm, val_loss)
        progress.window = Window()
    if done or _due(progress.step, settings.checkpoint_interval):
        save_checkpoint(run, session, progress)


@torch.no_grad()
def validate(run: Run, model: torch.nn.Module, micro: int) -> float | None:
    """Mean validation loss per label token (on at most ``eval_max_blocks`` blocks)."""
    count = len(run.validation)
    if count == 0:
        return None
    limit = run.settings.eval_max_blocks
    indices = list(range(min(count, limit) if limit > 0 else count))
    model.eval()
    loss, labels = 0.0, 0
    for start in range(0, len(indices), micro):
        batch = run.validation.batch(indices[start : start + micro])
        loss += float(loss_sum(model, batch, run.device, run.dtype))
        labels += int((batch["labels"][:, 1:] != IGNORE).sum())
    model.train()
    return loss / max(labels, 1)


def keep_best(run: Run, model: torch.nn.Module, progress: Progress, val_loss: float | None) -> None:
    """Save the adapter to ``train_state/best`` when ``val_loss`` is the lowest so far."""
    if val_loss is None or run.rank != 0:
        return
    if progress.best_val_loss is None or val_loss < progress.best_val_loss:
        progress.best_val_loss, progress.best_step = val_loss, progress.step
        with atomic_path(run.state_dir / "best") as temporary:
            model.save_pretrained(temporary)


def log_row(
    run: Run,
    session: Session,
    progress: Progress,
    grad_norm: float,
    val_loss: float | None,
) -> None:
    """One ``training_log.csv`` row (rank 0 only)."""
    if run.rank != 0:
        return
    window = progress.window
    training_log.append(
        run.state_dir,
        {
            "step": progress.step,
            "epoch": run.epochs_at(progress.step),
            "loss": round(window.loss / max(window.steps, 1), 6),
            "lr": f"{session.scheduler.get_last_lr()[0]:.3e}",
            "grad_norm": round(grad_norm, 6),
            "tokens": progress.tokens,
            "tokens_per_s": round(window.tokens / max(window.seconds, 1e-9), 1),
            "peak_memory_mb": round(_peak_memory_mb(run.device), 1),
            "val_loss": "" if val_loss is None else round(val_loss, 6),
            "micro_batch": session.plan.micro_batch,
            "accumulation": session.plan.accumulation,
        },
    )


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_checkpoint(run: Run, session: Session, progress: Progress) -> None:
    """Everything a resume needs (rank 0 writes; every process waits for it)."""
    if run.rank == 0:
        state = {
            **dataclasses.asdict(progress),
            "config_hash": run.config_hash,
            "micro_batch": session.plan.micro_batch,
            "accumulation": session.plan.accumulation,
        }
        checkpoint.save(
            run.state_dir / "checkpoint",
            trained.trained_state(session.model),
            session.optimizer.state_dict(),
            session.scheduler.state_dict(),
            state,
        )
    distributed.barrier(run.world)
