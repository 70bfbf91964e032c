"""The adapter's README.md: what a person (or the Hugging Face hub) shows about the adapter (or
about a model trained in full, repotune.pretrain)."""

from typing import Any

HYPERPARAMETERS = (
    "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "lr_schedule", "weight_decay",
    "batch_size", "max_grad_norm", "optimizer", "seed",
)  # fmt: skip


def plain_value(value: Any) -> str:
    """A value for a Markdown table: ``n/a`` for missing, 4 significant digits for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _adapter_header(summary: dict[str, Any]) -> str:
    return f"""---
library_name: peft
base_model: {summary["base_model"]}
tags: [repotune, lora]
---

# {summary["model"]} LoRA adapter (repotune)

A LoRA adapter for `{summary["base_model"]}`, trained by repotune on the commit history of
one repository. Load it with
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), this_directory)`.
This directory holds the adapter with the lowest validation loss (`{summary["adapter"]}`, step
{plain_value(summary["best_step"])}); `last/` holds the adapter after the final step.
"""


def _full_header(summary: dict[str, Any]) -> str:
    return f"""---
library_name: transformers
tags: [repotune, pretrained-here]
---

# {summary["model"]} (repotune, pretrained on local files)

A small causal language model trained by repotune from a random initialisation, every
parameter, on local source files (the manifest beside this directory lists them). Load it with
`AutoModelForCausalLM.from_pretrained(this_directory)`, or name this directory as the `base:`
of a model entry. It holds the weights with the lowest validation loss (`{summary["adapter"]}`,
step {plain_value(summary["best_step"])}); `last/` holds the weights after the final step.
"""


def model_card(summary: dict[str, Any]) -> str:
    """Markdown model card from a training summary (see ``training_summary.json``)."""
    settings = summary["settings"]
    batching = f"{summary['micro_batch']} x {summary['accumulation']} x {summary['world_size']}"
    full = summary.get("method") == "full"
    shown = [key for key in HYPERPARAMETERS if not (full and key.startswith("lora_"))]
    rows = "\n".join(f"| `{key}` | {plain_value(settings[key])} |" for key in shown)
    header = _full_header(summary) if full else _adapter_header(summary)
    return f"""{header}
## Data

{summary["train_blocks"]} training blocks of {summary["seq_len"]} tokens
({summary["train_tokens"]} real tokens), {summary["validation_blocks"]} validation blocks;
{summary["steps"]} optimizer steps drew {summary["blocks_drawn"]} blocks:
{summary["epochs"]} of an epoch (an epoch is as many draws as there are training blocks),
{summary["tokens"]} tokens seen.

## Training

| setting | value |
|---|---|
{rows}
| quantization | {summary["quantization"]} |
| compute dtype | {summary["dtype"]} |
| micro-batch x accumulation x processes | {batching} |
| base | {summary["base_training"]} |
| LoRA targets | {", ".join(summary["resolved_targets"]) or "none"} |
| trained in full | {", ".join(summary["trained_in_full"]) or "none"} |
| trainable parameters | {summary["trainable_params"]} |

## Results

| metric | value |
|---|---|
| final train loss | {plain_value(summary["final_train_loss"])} |
| final validation loss | {plain_value(summary["final_val_loss"])} |
| best validation loss | {plain_value(summary["best_val_loss"])} |
| tokens per second | {plain_value(summary["tokens_per_s"])} |
"""
