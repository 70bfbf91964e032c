"""Base + adapter merged into one plain Hugging Face model.

The adapter's low-rank update is added into the base weights (``merge_and_unload``), so any
engine that reads a Hugging Face model runs the fine-tuned model without peft. The base is
loaded **unquantized in the compute dtype training used**: after QLoRA the adapter was trained
against 4-bit weights, but merging into 4-bit weights would round the update away (and
bitsandbytes cannot save the result as a plain model), so the merge target is the full-precision
base in bf16/fp16/fp32 as recorded in the adapter's training_summary.json. The difference
from training's view of the base is the 4-bit rounding the adapter was trained to live with.
"""

import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from repotune.adapter_files import SUMMARY_FILE
from repotune.errors import InputError
from repotune.hardware import DTYPES
from repotune.modeling import load_model


def training_summary(adapter_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(adapter_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))


def base_model(adapter_dir: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The adapter's base on the CPU, unquantized, in ``dtype`` (default: the compute dtype
    training used)."""
    summary = training_summary(adapter_dir)
    return load_model(
        summary["base_model"],
        quantization="none",
        dtype=dtype or DTYPES[summary["dtype"]],
        device=torch.device("cpu"),
        trust_remote_code=summary["settings"]["trust_remote_code"],
    )


ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def is_lora_tensor(key: str) -> bool:
    """Whether an adapter tensor is a LoRA A/B matrix (else a layer trained in full)."""
    return ".lora_A." in key or ".lora_B." in key


def trained_in_full(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """The layers training updated in full beside the LoRA pairs (peft ``modules_to_save``: the
    embeddings and LM head of a base built from config), by their name in the base model."""
    tensors = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    return {
        key.removeprefix(PEFT_PREFIX): tensor
        for key, tensor in tensors.items()
        if not is_lora_tensor(key)
    }


def lora_base(adapter_dir: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The base a GGUF LoRA of this adapter applies to: the adapter's base with the layers
    training updated in full put in, so that it plus the LoRA pairs is exactly the merged model
    (a LoRA file can only hold low-rank pairs; for a plain LoRA adapter this is the base)."""
    base = base_model(adapter_dir, dtype)
    full = trained_in_full(adapter_dir)
    state = base.state_dict()
    unknown = sorted(set(full) - set(state))
    if unknown:
        raise InputError(
            f"adapter '{adapter_dir}'",
            f"holds layers its base does not have ({', '.join(unknown)})",
            "export the merged model (export.merged) instead of a GGUF LoRA",
        )
    base.load_state_dict(
        {key: tensor.to(state[key].dtype) for key, tensor in full.items()}, strict=False
    )
    return base


def merge(adapter_dir: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The merged model on the CPU, in ``dtype`` (default: the compute dtype training used)."""
    adapted = PeftModel.from_pretrained(base_model(adapter_dir, dtype), str(adapter_dir))
    merged = adapted.merge_and_unload()
    merged.eval()
    return merged


def save_merged(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | Path
) -> None:
    """safetensors weights, config, tokenizer and a generation config that stops at EOS."""
    directory = Path(directory)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=model.config.bos_token_id,
    )
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
