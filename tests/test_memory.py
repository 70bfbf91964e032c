"""The memory estimator: hand-worked figures, its activation terms against what autograd really
saves for backward on CPU (small real GPT-2 and StarCoder2 architectures with repotune's LoRA),
and its totals against the peak memory of an H100 run."""

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, PretrainedConfig, Starcoder2Config

from repotune.modeling import model_shape
from repotune.shards.table import IGNORE
from repotune.train.bookkeeping import loss_sum
from repotune.train.lora import (
    FAMILY_TARGETS,
    lora_config,
    targets_are_conv1d,
    trainable_parameters,
)
from repotune.train.memory import (
    FP32,
    ModelShape,
    estimate,
    layer_token_bytes,
    pick_batch,
)

# GPT-2-like: 1000 params of which 600 in block linears, 2 layers, hidden 8, ffn 32, vocab 50.
SHAPE = ModelShape(
    params=1000, quantizable_params=600, layers=2, hidden=8, intermediate=32, heads=2, vocab=50
)
SEQ = 40  # differs from every width below, so attention weights (seq x seq) stand out
GPT2_SMALL = GPT2Config(vocab_size=512, n_layer=1, n_head=4, n_embd=96, n_positions=64)
STARCODER2_SMALL = Starcoder2Config(
    vocab_size=512, hidden_size=96, intermediate_size=256, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_bias=True,
    hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
)  # fmt: skip


def test_unquantized_fp32_without_checkpointing():
    result = estimate(
        SHAPE, quantization="none", dtype_bytes=4, lora_params=100, micro_batch=2, seq_len=16,
        checkpointing=False,
    )  # fmt: skip
    assert result.weights == 1000 * 4
    assert result.lora == 100 * 8  # fp32 weights + grads
    assert result.optimizer == 100 * 8  # two fp32 moments
    # per token and layer: two fp32 norm inputs 2 * 8 * 4 = 64, q/k/v/out (4 * 8) * 4 = 128,
    # the fused gelu's input 32 * 4 = 128; 32 tokens, 2 layers
    assert result.activations == 320 * 32 * 2
    assert result.logits == 32 * 50 * 4 * 3  # log-probs, their gradient, the one returned
    assert result.total == 4000 + 800 + 800 + 20480 + 19200


def test_nf4_with_checkpointing_and_materialised_attention():
    result = estimate(
        SHAPE, quantization="nf4", dtype_bytes=2, lora_params=100, micro_batch=1, seq_len=16,
        checkpointing=True, optimizer="paged_adamw_8bit", materialised_attention=True,
        overhead=7,
    )  # fmt: skip
    # 600 * 4.127 / 8 = 309.525 -> 310 bytes, the other 400 params upcast to fp32
    assert result.weights == 310 + 400 * 4
    assert result.optimizer == 200
    # kept layer inputs, fp32 residual stream: 2 layers * 16 tokens * 8 * 4 bytes = 1024; the
    # recomputed layer (16 * (64 + 32 * 2 + 2 * 16 * 2 + 32 * 2) = 4096) is smaller than the
    # logits' peak (16 * 50 * 12 = 9600), which is freed before it: it adds nothing.
    assert result.activations == 1024
    assert result.total == 1910 + 800 + 200 + 1024 + 9600 + 7


def test_int8_weights():
    result = estimate(
        SHAPE, quantization="int8", dtype_bytes=2, lora_params=0, micro_batch=1, seq_len=1,
        checkpointing=False,
    )  # fmt: skip
    assert result.weights == 600 + 400 * 4


def test_pick_batch_takes_largest_fitting_divisor_and_matching_accumulation():
    assert pick_batch(lambda size: size <= 5, effective_batch=16) == (4, 4)
    assert pick_batch(lambda size: size <= 100, effective_batch=16) == (16, 1)
    assert pick_batch(lambda size: size <= 3, effective_batch=12) == (3, 4)
    assert pick_batch(lambda size: False, effective_batch=8) == (1, 8)
    assert pick_batch(lambda size: size <= 2, effective_batch=16, world_size=2) == (2, 4)


def test_estimate_grows_with_micro_batch_so_budget_selects_it():
    def total(size: int) -> int:
        return estimate(
            SHAPE, quantization="none", dtype_bytes=4, lora_params=100, micro_batch=size,
            seq_len=16, checkpointing=False,
        ).total  # fmt: skip

    budget = total(4) + 1
    assert pick_batch(lambda size: total(size) <= budget, effective_batch=8) == (4, 2)


# -- the activation terms against autograd's saved tensors (CPU, fp32: the trainer's CPU path) --


def adapted(config: PretrainedConfig, layers: int, lora_dropout: float = 0.05) -> torch.nn.Module:
    """The architecture with ``layers`` layers and repotune's LoRA on its family's targets."""
    config = config.__class__(**{**config.to_dict(), "num_hidden_layers": layers})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    targets = FAMILY_TARGETS[config.model_type]
    fan_in_fan_out = targets_are_conv1d(model, targets)
    model = get_peft_model(model, lora_config(targets, 8, 16, lora_dropout, fan_in_fan_out))
    return model.train()


def saved_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Bytes autograd saves in one training forward (repotune's loss, micro-batch 1), each
    storage once, parameters left out: (everything else, the ``seq x seq`` attention weights)."""
    parameters = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    seen: dict[int, int] = {}
    attention = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.data_ptr() not in seen:
            seen[storage.data_ptr()] = storage.nbytes()
            if sum(size == SEQ for size in tensor.shape) >= 2:
                attention[0] += storage.nbytes()
        return tensor

    torch.manual_seed(1)
    ids = torch.randint(2, 500, (1, SEQ))
    batch = {"input_ids": ids, "position_ids": torch.arange(SEQ)[None], "labels": ids.clone()}
    batch["labels"][0, 0] = IGNORE
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_sum(model, batch, torch.device("cpu"), torch.float32)
    loss.backward()
    return sum(seen.values()) - attention[0], attention[0]


def per_layer_token(config: PretrainedConfig, **lora: float) -> tuple[float, float, ModelShape]:
    """Saved bytes a layer and token (two layers minus one), attention weights apart, and the
    estimator's view of the two-layer model."""
    one, two = adapted(config, 1, **lora), adapted(config, 2, **lora)
    (rest_1, attention_1), (rest_2, attention_2) = saved_bytes(one), saved_bytes(two)
    return (rest_2 - rest_1) / SEQ, (attention_2 - attention_1) / SEQ, model_shape(two)


def estimated(shape: ModelShape, materialised: bool = False) -> int:
    return layer_token_bytes(shape, SEQ, FP32, materialised, dropout_mask_bytes=FP32)


@pytest.mark.parametrize("config", [GPT2_SMALL, STARCODER2_SMALL], ids=["gpt2", "starcoder2"])
def test_layer_term_matches_saved_tensors(config: PretrainedConfig):
    measured, _, shape = per_layer_token(config)
    # Not exact: the estimate leaves out LoRA's rank-wide intermediates and the norms'
    # statistics, and GPT-2's attention dropout sends CPU attention to the math kernel, whose
    # copies differ from the fused kernels' query/key/value/output.
    assert measured == pytest.approx(estimated(shape), rel=0.05)


def test_gelu_new_saves_its_composite_parts_and_gelu_only_its_input():
    composite, _, composite_shape = per_layer_token(GPT2_SMALL)
    fused, _, fused_shape = per_layer_token(replace_config(GPT2_SMALL, activation_function="gelu"))
    assert composite_shape.activation == "gelu_new" and fused_shape.activation == "gelu"
    assert composite - fused == estimated(composite_shape) - estimated(fused_shape)
    assert composite - fused == 3 * FP32 * 4 * GPT2_SMALL.n_embd  # three more fp32 tensors


def test_dropout_masks_follow_the_config():
    on, _, on_shape = per_layer_token(GPT2_SMALL)
    off_config = replace_config(GPT2_SMALL, resid_pdrop=0.0, embd_pdrop=0.0)
    off, _, off_shape = per_layer_token(off_config, lora_dropout=0.0)
    assert (on_shape.residual_dropout, off_shape.residual_dropout) == (0.1, 0.0)
    assert off_shape.lora_dropout_inputs == 0 < on_shape.lora_dropout_inputs
    assert on - off == estimated(on_shape) - estimated(off_shape)


def test_materialised_attention_weights_with_attention_dropout():
    _, attention, shape = per_layer_token(GPT2_SMALL)
    # softmax output, dropout mask and the dropped weights: heads * seq values a token each
    assert attention == estimated(shape, True) - estimated(shape)
    assert attention == 3 * GPT2_SMALL.n_head * SEQ * FP32


def test_shape_of_a_4bit_model_counts_weights_before_packing(tmp_path):
    """bitsandbytes packs two 4-bit weights a byte: the shape must count the model's weights,
    not the packed bytes (which left half the quantized weights priced at the compute dtype)."""
    from transformers import BitsAndBytesConfig

    AutoModelForCausalLM.from_config(GPT2_SMALL).save_pretrained(tmp_path)
    plain = model_shape(AutoModelForCausalLM.from_pretrained(tmp_path))
    quantized = model_shape(
        AutoModelForCausalLM.from_pretrained(
            tmp_path, dtype=torch.bfloat16, device_map={"": "cpu"},
            quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        )
    )  # fmt: skip
    assert quantized.quantizable_params == plain.quantizable_params > 0
    assert quantized.params == plain.params
    assert quantized.projection_inputs == plain.projection_inputs == 3 * 96 + 4 * 96


def test_int8_matmul_keeps_its_input_out_of_autograds_reach(tmp_path):
    """The int8 term: bitsandbytes' int8 matmul holds its whole input on the autograd context
    (not through save_for_backward), so saved-tensor hooks, and checkpointing, never see it."""
    from transformers import BitsAndBytesConfig

    AutoModelForCausalLM.from_config(GPT2_SMALL).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path, device_map={"": "cpu"}, quantization_config=BitsAndBytesConfig(load_in_8bit=True)
    )
    projection = model.transformer.h[0].mlp.c_proj  # input width: the intermediate size
    assert type(projection).__name__ == "Linear8bitLt"
    inputs = torch.randn(1, SEQ, 4 * GPT2_SMALL.n_embd, requires_grad=True)
    hooked: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: hooked.append(t) or t, lambda t: t):
        output = projection(inputs)
    node = output.grad_fn
    while not hasattr(node, "dtype_A"):  # the bitsandbytes function's context
        node = node.next_functions[0][0]
    kept = [value for value in vars(node).values() if isinstance(value, torch.Tensor)]
    kept += [value for value in getattr(node, "tensors", ()) if isinstance(value, torch.Tensor)]
    kept_bytes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
    assert kept_bytes[inputs.untyped_storage().data_ptr()] == SEQ * 4 * GPT2_SMALL.n_embd * FP32
    hooked_ptrs = {t.untyped_storage().data_ptr() for t in hooked}
    assert inputs.untyped_storage().data_ptr() not in hooked_ptrs


def replace_config(config: PretrainedConfig, **changes: object) -> PretrainedConfig:
    return config.__class__(**{**config.to_dict(), **changes})


# -- totals against an H100 run ----------------------------------------------------------------

# Measured, not computed: torch.cuda.max_memory_allocated (MiB) of benchmarks/gpu_check.py on an
# NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130, transformers 5.24.0, peft 0.21.2, bitsandbytes
# 0.50.2), 2026-11-26, run by the lead; LoRA r=8, dropout 0.05, the family's targets.
# (model, quantization, dtype bytes, checkpointing, micro-batch, seq, optimizer, allocated MiB)
H100_RUNS = {
    "gpt2_medium_fp16": ("gpt2", "none", 2, False, 8, 1024, "adamw", 24134.1),
    "gpt2_medium_paged_8bit": ("gpt2", "none", 2, False, 8, 1024, "paged_adamw_8bit", 24116.3),
    "gpt2_medium_oom_backoff_micro_16": ("gpt2", "none", 2, False, 16, 1024, "adamw", 47496.2),
    "starcoder2_3b_bf16": ("starcoder2", "none", 2, False, 4, 2048, "adamw", 48323.6),
    "starcoder2_3b_nf4": ("starcoder2", "nf4", 2, True, 8, 2048, "adamw", 17697.3),
    "gpt2_medium_int8": ("gpt2", "int8", 2, True, 8, 1024, "adamw", 11237.6),
}  # fmt: skip
# The architectures as published (config.json of openai-community/gpt2-medium and
# bigcode/starcoder2-3b), as benchmarks/gpu_check.py builds them.
H100_CONFIGS = {
    "gpt2": GPT2Config(vocab_size=50257, n_layer=24, n_head=16, n_embd=1024, n_positions=1024),
    "starcoder2": Starcoder2Config(
        vocab_size=49152, hidden_size=3072, intermediate_size=12288, num_hidden_layers=30,
        num_attention_heads=24, num_key_value_heads=2, max_position_embeddings=16384,
        use_bias=True, hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("run", list(H100_RUNS))
def test_estimate_within_15_percent_of_h100_peak(run: str):
    family, quantization, dtype_bytes, checkpointing, micro, seq, optimizer, allocated = H100_RUNS[
        run
    ]
    config = H100_CONFIGS[family]
    with torch.device("meta"):  # shapes only: no weights are allocated
        model = AutoModelForCausalLM.from_config(config)
        targets = FAMILY_TARGETS[family]
        model = get_peft_model(
            model, lora_config(targets, 8, 16, 0.05, targets_are_conv1d(model, targets))
        )
    result = estimate(
        model_shape(model), quantization=quantization, dtype_bytes=dtype_bytes,
        lora_params=trainable_parameters(model), micro_batch=micro, seq_len=seq,
        checkpointing=checkpointing, optimizer=optimizer, overhead=512 * 1024**2,
    )  # fmt: skip
    assert result.total / 1024**2 / allocated == pytest.approx(1, abs=0.15)
