"""Training memory estimate, and the largest micro-batch that fits a budget.

The estimate adds up, in bytes:

* **base weights**: quantizable parameters (the linear layers of the transformer blocks) at
  the chosen bits: NF4 with double quantization is 4.127 bits a weight (4 bits plus one 8-bit
  absmax per 64 weights, itself quantized per 256 blocks with one fp32 scale), int8 is 8 bits;
  the rest (embeddings, norms, the LM head) stays at the compute dtype;
* **LoRA parameters** in fp32 (4 bytes), their gradients (4 bytes) and the optimizer state
  (AdamW: two fp32 moments, 8 bytes; 8-bit AdamW: 2 bytes);
* **activations** per layer and token, ``ACT_HIDDEN * hidden + ACT_FFN * intermediate``
  values at the compute dtype (layer-norm inputs, Q/K/V, the attention output, the MLP's input,
  pre- and post-activation), plus the attention weights ``heads * seq_len`` per token when the
  attention kernel materialises them (the CPU math kernel does; flash/memory-efficient do
  not). With gradient checkpointing only every layer's input (``hidden`` values a token) is kept
  and one layer's full activations are live at a time during recomputation;
* **logits**: ``vocab`` fp32 values a token, twice (the logits and their gradient);
* a fixed **overhead** (the CUDA context and allocator slack).

It is an estimate for choosing a micro-batch, not an accounting: the OOM back-off in the
trainer catches what it gets wrong.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

ACT_HIDDEN = 10
ACT_FFN = 3
NF4_BITS = 4.127
QUANT_BITS = {"nf4": NF4_BITS, "int8": 8.0}
OPTIMIZER_BYTES = {"adamw": 8, "paged_adamw_8bit": 2}
GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model."""

    params: int
    quantizable_params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component; ``total`` is their sum."""

    weights: int
    lora: int
    optimizer: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return (
            self.weights + self.lora + self.optimizer + self.activations + self.logits
        ) + self.overhead

    def as_dict(self) -> dict[str, int]:
        """Components and total in bytes, for logs and the training summary."""
        return {**asdict(self), "total": self.total}


def weight_bytes(shape: ModelShape, quantization: str, dtype_bytes: int) -> int:
    """Bytes of the frozen base model."""
    rest = shape.params - shape.quantizable_params
    if quantization == "none":
        return shape.params * dtype_bytes
    quantized = shape.quantizable_params * QUANT_BITS[quantization] / 8
    return round(quantized) + rest * dtype_bytes


def activation_bytes(
    shape: ModelShape,
    micro_batch: int,
    seq_len: int,
    dtype_bytes: int,
    checkpointing: bool,
    materialised_attention: bool,
) -> int:
    """Bytes of the activations kept for the backward pass."""
    tokens = micro_batch * seq_len
    per_token_layer = ACT_HIDDEN * shape.hidden + ACT_FFN * shape.intermediate
    if materialised_attention:
        per_token_layer += shape.heads * seq_len
    full_layer = tokens * per_token_layer * dtype_bytes
    if checkpointing:
        return shape.layers * tokens * shape.hidden * dtype_bytes + full_layer
    return shape.layers * full_layer


def estimate(
    shape: ModelShape,
    *,
    quantization: str,
    dtype_bytes: int,
    lora_params: int,
    micro_batch: int,
    seq_len: int,
    checkpointing: bool,
    optimizer: str = "adamw",
    materialised_attention: bool = False,
    overhead: int = 0,
) -> MemoryEstimate:
    """Estimate the training memory of one process (see the module docstring for the terms)."""
    return MemoryEstimate(
        weights=weight_bytes(shape, quantization, dtype_bytes),
        lora=lora_params * (4 + 4),
        optimizer=lora_params * OPTIMIZER_BYTES[optimizer],
        activations=activation_bytes(
            shape, micro_batch, seq_len, dtype_bytes, checkpointing, materialised_attention
        ),
        logits=micro_batch * seq_len * shape.vocab * 4 * 2,
        overhead=overhead,
    )


def pick_batch(
    fits: Callable[[int], bool], effective_batch: int, world_size: int = 1
) -> tuple[int, int]:
    """The largest micro-batch that divides the per-process share of the effective batch and for
    which ``fits(micro_batch)`` holds, and the gradient accumulation that makes up the share, so
    ``micro * accumulation * world_size`` is the effective batch (rounded up to a multiple of
    ``world_size``).

    Returns micro-batch 1 when nothing fits: training then tries and the OOM back-off reports it.
    """
    share = max(1, -(-effective_batch // world_size))
    divisors = [size for size in range(1, share + 1) if share % size == 0]
    micro = max((size for size in divisors if fits(size)), default=1)
    return micro, share // micro
