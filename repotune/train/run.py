"""What a training run holds, as values: the request, what is fixed for the run, the batch plan,
the progress a checkpoint saves, and the objects of one attempt (rebuilt after an OOM)."""

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from repotune.hardware import Hardware
from repotune.models import ModelSpec
from repotune.shards.torch_blocks import ShardBlocks
from repotune.train.data import BlockOrder
from repotune.train.settings import TrainSettings


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
    # lora: an adapter over the base (the train stage); full: every parameter of the base, for
    # a base pretrained here (repotune.pretrain).
    method: str = "lora"


@dataclass(frozen=True)
class Run:
    """What is fixed for the whole run, whatever happens to the micro-batch."""

    request: TrainRequest
    spec: ModelSpec
    settings: TrainSettings
    hardware: Hardware
    device: torch.device
    dtype: torch.dtype
    rank: int
    world: int
    tokenizer: PreTrainedTokenizerBase
    train: ShardBlocks
    validation: ShardBlocks
    order: BlockOrder
    epochs: int
    total_steps: int
    warmup: int
    config_hash: str
    state_dir: Path

    @property
    def effective_batch(self) -> int:
        """Blocks per optimizer step, over all processes."""
        return self.settings.batch_size

    def epochs_at(self, step: int) -> float:
        """How much of the training split ``step`` steps drew, in epochs (an epoch is as many
        block draws as the split has blocks): 150 steps of 8 over 6,928 blocks are 0.173."""
        return round(step * self.effective_batch / max(len(self.train), 1), 4)


@dataclass(frozen=True)
class AdaptedModel:
    """The base with LoRA attached, and what the summary reports about it."""

    model: torch.nn.Module
    targets: list[str]
    trained_in_full: list[str]
    trainable_params: int
    gradient_checkpointing: bool


@dataclass(frozen=True)
class BatchPlan:
    """How an optimizer step's blocks are split: ``micro_batch`` blocks per forward pass,
    ``accumulation`` passes per process, and the memory estimate that chose them."""

    micro_batch: int
    accumulation: int
    memory_estimate: dict[str, int]
    memory_budget: int


@dataclass
class Window:
    """Running sums between two log rows; ``seconds`` counts training time only (no eval)."""

    loss: float = 0.0
    tokens: int = 0
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Progress:
    """Where training stands; saved in each checkpoint's ``state.json``, the open log window
    included, so a resumed run logs the same rows as an uninterrupted one."""

    step: int = 0
    tokens: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    seconds: float = 0.0
    window: Window = field(default_factory=Window)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Progress":
        """The progress a checkpoint's ``state.json`` recorded."""
        kept = {item.name: state[item.name] for item in fields(cls) if item.name != "window"}
        return cls(**kept, window=Window(**state["window"]))


@dataclass(frozen=True)
class Session:
    """One attempt at training from the last checkpoint: an out-of-memory error discards it and
    the next attempt starts with half the micro-batch."""

    adapted: AdaptedModel
    ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    plan: BatchPlan

    @property
    def model(self) -> torch.nn.Module:
        """The peft model (not the DDP wrapper)."""
        return self.adapted.model
