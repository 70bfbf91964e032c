"""The train stage's settings, typed: the config's ``train:`` section with the model entry's
``train:`` keys applied (:func:`repotune.models.with_overrides`).

config/schema.yaml documents and defaults every key; this class repeats no default, it only
gives the trainer attribute access with types instead of string look-ups. ``raw`` keeps the
mapping as given: it is what the checkpoint hash and the training summary record.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from repotune.models import ModelSpec, with_overrides


@dataclass(frozen=True)
class TrainSettings:
    """One run's training settings (see config/schema.yaml, section ``train``)."""

    quantization: str
    compute_dtype: str
    gradient_checkpointing: str
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: str | list[str]
    trust_remote_code: bool
    batch_size: int
    micro_batch_size: int
    max_memory_gb: float
    memory_safety_margin: float
    optimizer: str
    learning_rate: float
    weight_decay: float
    lr_schedule: str
    warmup_ratio: float
    warmup_steps_min: int
    warmup_steps_max: int
    max_grad_norm: float
    seed: int
    target_tokens: int
    min_epochs: int
    max_epochs: int
    max_steps: int
    weighted_sampling: bool
    eval_interval: int
    eval_max_blocks: int
    logging_steps: int
    checkpoint_interval: int
    num_gpus: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def for_model(cls, config_train: Mapping[str, Any], spec: ModelSpec) -> "TrainSettings":
        """The config's ``train:`` section with ``spec``'s overrides; unknown keys fail."""
        raw = with_overrides(spec, "train", dict(config_train))
        names = [item.name for item in fields(cls) if item.name != "raw"]
        return cls(**{name: raw[name] for name in names}, raw=raw)

    @property
    def gradient_checkpointing_on(self) -> bool:
        """``auto`` means on for a quantized base, where activations dominate memory."""
        return {"auto": self.quantization != "none", "on": True, "off": False}[
            self.gradient_checkpointing
        ]
