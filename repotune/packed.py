"""The one forward pass over packed blocks, shared by training and scoring.

A block holds several documents back to back; ``position_ids`` restart at 0 where each one
starts. transformers 5 turns such position ids into a block-diagonal causal mask
(``masking_utils.find_packed_sequence_indices``) only when the call passes no attention mask
and no cache: with the default ``use_cache=True`` it skips the packed-sequence check and
document B attends to document A (its logits move by 0.3-0.4 for GPT-2, StarCoder2 and Phi).
Every training and scoring pass therefore goes through :func:`packed_logits`, which always
passes ``position_ids`` and ``use_cache=False``; tests/test_packed.py checks that a document
packed after another gets the logits and loss it gets alone, for each preset family.
"""

import torch


def packed_logits(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Logits of a batch of packed blocks (:func:`repotune.shards.torch_blocks.collate`'s
    output), each document seeing only itself; under autocast to ``dtype`` unless it is
    float32."""
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        output = model(
            input_ids=batch["input_ids"].to(device),
            position_ids=batch["position_ids"].to(device),
            use_cache=False,
        )
    return output.logits
