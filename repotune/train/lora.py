"""LoRA target modules: which layers get an adapter, resolved against the loaded model.

LoRA replaces a frozen weight ``W0`` by ``W0 x + (alpha / r) B A x`` with ``A`` (r x in) and
``B`` (out x r, zero-initialised), so only ``r * (in + out)`` values a layer are trained.
Which layers: every projection of attention and MLP, named per architecture. GPT-2 uses
``Conv1D`` (weights stored transposed), not ``nn.Linear``; peft handles it when the names match.

Names are checked against ``model.named_modules()`` at run time: a target that matches nothing
is a typo or the wrong family, and fails with the names that do exist instead of silently
training fewer layers.
"""

import torch
from peft import LoraConfig
from transformers.pytorch_utils import Conv1D

from repotune.errors import InputError

ALL_LINEAR = "all-linear"

FAMILY_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
}


def _adaptable(module: torch.nn.Module) -> bool:
    """A layer LoRA can wrap: linear, GPT-2 Conv1D, or a bitsandbytes quantized linear."""
    return isinstance(module, torch.nn.Linear | Conv1D)


def default_targets(family: str, model_type: str) -> list[str] | str:
    """The architecture's projection names; ``all-linear`` for an unknown family."""
    for key in (family, model_type):
        if key in FAMILY_TARGETS:
            return list(FAMILY_TARGETS[key])
    return ALL_LINEAR


def resolve_targets(
    model: torch.nn.Module, requested: str | list[str], family: str = "auto"
) -> list[str]:
    """The module-name suffixes to adapt, each shown to match at least one layer of ``model``.

    ``requested`` is ``auto`` (the family's list), ``all-linear`` (every linear layer of the
    blocks, not the LM head) or a list of names. Raises :class:`InputError` for a name that
    matches no adaptable layer.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", "") or ""
    targets = default_targets(family, model_type) if requested == "auto" else requested
    output_names = _output_layer_names(model)
    layers = {
        name: module
        for name, module in model.named_modules()
        if name and _adaptable(module) and name not in output_names
    }
    if targets == ALL_LINEAR:
        resolved = sorted({name.rsplit(".", 1)[-1] for name in layers})
        if not resolved:
            raise InputError("config train.lora_targets", "the model has no linear layers", "")
        return resolved
    if isinstance(targets, str):
        targets = [targets]
    suffixes = {name.rsplit(".", 1)[-1] for name in layers}
    missing = [target for target in targets if target not in suffixes]
    if missing:
        raise InputError(
            "config train.lora_targets",
            f"{', '.join(missing)} match no linear layer of this {model_type or 'model'}",
            f"use 'auto', '{ALL_LINEAR}' or names from: {', '.join(sorted(suffixes))}",
        )
    return list(targets)


def _output_layer_names(model: torch.nn.Module) -> set[str]:
    """The LM head's module name(s): adapting the vocabulary projection is never wanted."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, module in model.named_modules() if head is not None and module is head}


def embedding_modules(model: torch.nn.Module) -> list[str]:
    """Names of the token embedding, the LM head and any learned position embedding.

    A base built from config is random: LoRA's low-rank updates of its projections cannot give
    tokens meanings or the output layer a vocabulary, so these layers are trained in full next
    to the adapter (peft ``modules_to_save``) and saved with it.
    """
    tokens, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is not None and head.weight is tokens.weight:
        raise InputError(
            "the built base", "ties its input and output embeddings", "build it untied"
        )
    wanted = [tokens, head, *(m for name, m in model.named_modules() if name.endswith(".wpe"))]
    return [name for name, module in model.named_modules() if any(module is w for w in wanted)]


def lora_config(
    targets: list[str],
    r: int,
    alpha: int,
    dropout: float,
    fan_in_fan_out: bool = False,
    modules_to_save: list[str] | None = None,
) -> LoraConfig:
    """The peft config for a causal LM with the resolved ``targets``.

    ``fan_in_fan_out`` is True for GPT-2's ``Conv1D`` layers, which store weights transposed;
    ``modules_to_save`` are trained in full and saved in the adapter
    (:func:`embedding_modules`).
    """
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="CAUSAL_LM",
    )


def targets_are_conv1d(model: torch.nn.Module, targets: list[str]) -> bool:
    """Whether the resolved targets are transformers' ``Conv1D`` layers (GPT-2 style)."""
    return any(
        isinstance(module, Conv1D)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in targets
    )


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of parameters the optimizer updates."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
