"""Training memory estimate, and the largest micro-batch that fits a budget.

The estimate adds up, in bytes, what is live at the peak of a training step (the start of the
backward pass: every saved activation and the loss's gradients at once):

* **base weights**: quantizable parameters (the linear layers of the transformer blocks) at
  the chosen bits: NF4 with double quantization is 4.127 bits a weight (4 bits plus one 8-bit
  absmax per 64 weights, itself quantized per 256 blocks with one fp32 scale), int8 is 8 bits;
  the rest (embeddings, norms, biases) stays at the compute dtype, or fp32 when quantized
  (peft's ``prepare_model_for_kbit_training`` upcasts them);
* **LoRA parameters** in fp32 (4 bytes), their gradients (4 bytes) and the optimizer state
  (AdamW: two fp32 moments, 8 bytes; 8-bit AdamW: 2 bytes);
* **activations**: what autograd saves for backward, per layer and token
  (:func:`layer_token_bytes`; measured with ``saved_tensors_hooks``, see tests/test_memory.py).
  The base projections are frozen and save nothing; what is saved is
  - each of the two layer norms' input in fp32 (autocast runs layer norm in fp32),
  - the attention kernel's query, key, value and output at the compute dtype (key and value
    with the key/value heads only), and the attention weights ``heads * seq_len`` a token when
    the kernel materialises them (the CPU math kernel does; flash/memory-efficient do not),
    three times over when attention dropout is on (weights, mask, dropped weights);
  - per LoRA-adapted projection its input at the compute dtype (for ``lora_A``'s gradient)
    and, with LoRA dropout, the dropout mask over that input;
  - the residual dropout masks (two a layer) when the config's residual dropout is on;
  - the MLP activation's saved tensors, read from the config's activation function: a fused
    one (``gelu``, ``gelu_pytorch_tanh``, ``relu``, ``silu``) keeps its input, GPT-2's
    ``gelu_new`` is a composite of ``pow``/``tanh``/``mul`` that keeps three fp32 tensors
    (``pow`` runs in fp32 under autocast) and one at the compute dtype.
  A dropout mask is 1 byte on CUDA (fused kernel) and a full fp32 tensor on CPU. Quantized to
  int8, bitsandbytes' matmul also keeps each projection's input on its context, out of
  autograd's (and gradient checkpointing's) reach (:func:`int8_input_bytes`). With gradient
  checkpointing only every layer's input is kept (fp32 when quantized: the upcast embeddings
  make the residual stream fp32), and one layer's activations are live at a time during
  recomputation, after the loss's gradients are gone;
* **logits**: ``vocab`` values a token, 12 bytes: the fp32 log-softmax output, its incoming
  gradient and the gradient it returns are live together at the loss's backward;
* a fixed **overhead** (the CUDA context and allocator slack).

It is an estimate for choosing a micro-batch, not an accounting: the OOM back-off in the
trainer catches what it gets wrong. Against an H100 run (BENCHMARKS.md, GPU check) it is within
7% of ``torch.cuda.max_memory_allocated`` for GPT-2 medium in fp16 and int8 and StarCoder2-3B
in bf16 and NF4 (tests/test_memory.py).
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

NF4_BITS = 4.127
QUANT_BITS = {"nf4": NF4_BITS, "int8": 8.0}
OPTIMIZER_BYTES = {"adamw": 8, "paged_adamw_8bit": 2}
FP32 = 4
# Activation functions made of several ops: the (fp32, compute-dtype) tensors of the
# intermediate size they save. Any other runs as one kernel and saves only its input.
COMPOSITE_ACTIVATIONS = {"gelu_new": (3, 1)}
NORMS_PER_LAYER = 2
RESIDUAL_DROPOUTS_PER_LAYER = 2
LOGIT_COPIES = 3
GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model: sizes, and the config facts that decide
    what autograd saves (activation function, dropout, key/value heads, LoRA inputs).

    ``projection_inputs`` is the summed input width of one layer's linear projections,
    ``lora_inputs`` that of its LoRA-adapted ones, ``lora_dropout_inputs`` the part of it behind
    a LoRA dropout."""

    params: int
    quantizable_params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    kv_heads: int = 0
    activation: str = "gelu"
    residual_dropout: float = 0.0
    attention_dropout: float = 0.0
    projection_inputs: int = 0
    lora_inputs: int = 0
    lora_dropout_inputs: int = 0


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
    """Bytes of the frozen base model; quantized, the unquantized rest is upcast to fp32."""
    rest = shape.params - shape.quantizable_params
    if quantization == "none":
        return shape.params * dtype_bytes
    quantized = shape.quantizable_params * QUANT_BITS[quantization] / 8
    return round(quantized) + rest * FP32


def activation_function_bytes(activation: str, dtype_bytes: int) -> int:
    """Bytes the MLP activation saves per intermediate value (see the module docstring)."""
    if activation in COMPOSITE_ACTIVATIONS:
        fp32_tensors, dtype_tensors = COMPOSITE_ACTIVATIONS[activation]
        return fp32_tensors * FP32 + dtype_tensors * dtype_bytes
    return dtype_bytes  # fused, or unknown: at least its input


def layer_token_bytes(
    shape: ModelShape,
    seq_len: int,
    dtype_bytes: int,
    materialised_attention: bool,
    dropout_mask_bytes: int = 1,
) -> int:
    """Bytes autograd saves for backward per layer and token, without checkpointing."""
    hidden = shape.hidden
    kv_width = hidden * (shape.kv_heads or shape.heads) // shape.heads
    norms = NORMS_PER_LAYER * hidden * FP32
    attention = (2 * hidden + 2 * kv_width) * dtype_bytes
    if materialised_attention:
        copies = 3 if shape.attention_dropout > 0 else 1
        attention += copies * shape.heads * seq_len * dtype_bytes
    lora = shape.lora_inputs * dtype_bytes + shape.lora_dropout_inputs * dropout_mask_bytes
    residual = RESIDUAL_DROPOUTS_PER_LAYER * hidden * dropout_mask_bytes
    mlp = shape.intermediate * activation_function_bytes(shape.activation, dtype_bytes)
    return norms + attention + lora + (residual if shape.residual_dropout > 0 else 0) + mlp


def logit_bytes(shape: ModelShape, tokens: int) -> int:
    """The loss's peak: fp32 log-probabilities, their gradient and the gradient they return."""
    return tokens * shape.vocab * FP32 * LOGIT_COPIES


def activation_bytes(
    shape: ModelShape,
    micro_batch: int,
    seq_len: int,
    dtype_bytes: int,
    checkpointing: bool,
    materialised_attention: bool,
    quantization: str = "none",
    dropout_mask_bytes: int = 1,
) -> int:
    """Bytes of the activations kept for the backward pass, beside the logits' peak.

    With checkpointing the recomputed layer is live only after the loss's gradients are freed,
    so it adds to the peak only where it outgrows them."""
    tokens = micro_batch * seq_len
    per_layer = tokens * layer_token_bytes(
        shape, seq_len, dtype_bytes, materialised_attention, dropout_mask_bytes
    )
    int8 = quantization == "int8"
    int8_inputs = shape.layers * tokens * int8_input_bytes(shape, dtype_bytes) if int8 else 0
    if not checkpointing:
        return shape.layers * per_layer + int8_inputs
    residual_bytes = dtype_bytes if quantization == "none" else FP32
    kept = shape.layers * tokens * shape.hidden * residual_bytes
    return kept + int8_inputs + max(0, per_layer - logit_bytes(shape, tokens))


def int8_input_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Bytes a layer and token that bitsandbytes' int8 matmul (``MatMul8bitLt`` on CUDA,
    ``MatMul8bitFp`` on CPU) keeps: each projection's input, held on its autograd context
    rather than saved through autograd,
    so gradient checkpointing cannot drop it. The inputs are fp32 (the upcast norms and
    residual stream) but for the attention output projection's, at the compute dtype."""
    return max(0, shape.projection_inputs * FP32 - shape.hidden * (FP32 - dtype_bytes))


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
    dropout_mask_bytes: int = 1,
    overhead: int = 0,
) -> MemoryEstimate:
    """Estimate the training memory of one process (see the module docstring for the terms).

    ``dropout_mask_bytes``: 1 for CUDA's fused dropout, :data:`FP32` on CPU (a float mask)."""
    return MemoryEstimate(
        weights=weight_bytes(shape, quantization, dtype_bytes),
        lora=lora_params * (4 + 4),
        optimizer=lora_params * OPTIMIZER_BYTES[optimizer],
        activations=activation_bytes(
            shape,
            micro_batch,
            seq_len,
            dtype_bytes,
            checkpointing,
            materialised_attention,
            quantization=quantization,
            dropout_mask_bytes=dropout_mask_bytes,
        ),
        logits=logit_bytes(shape, micro_batch * seq_len),
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
