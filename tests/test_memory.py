"""The memory estimator against figures worked out by hand."""

from repotune.train.memory import ModelShape, estimate, pick_batch

# GPT-2-like: 1000 params of which 600 in block linears, 2 layers, hidden 8, ffn 32, vocab 50.
SHAPE = ModelShape(
    params=1000, quantizable_params=600, layers=2, hidden=8, intermediate=32, heads=2, vocab=50
)


def test_unquantized_fp32_without_checkpointing():
    result = estimate(
        SHAPE, quantization="none", dtype_bytes=4, lora_params=100, micro_batch=2, seq_len=16,
        checkpointing=False,
    )  # fmt: skip
    assert result.weights == 1000 * 4
    assert result.lora == 100 * 8  # fp32 weights + grads
    assert result.optimizer == 100 * 8  # two fp32 moments
    # per token per layer: 10 * 8 + 3 * 32 = 176 values; 32 tokens, 2 layers, 4 bytes
    assert result.activations == 176 * 32 * 2 * 4
    assert result.logits == 32 * 50 * 4 * 2
    assert result.total == 4000 + 800 + 800 + 45056 + 12800


def test_nf4_with_checkpointing_and_materialised_attention():
    result = estimate(
        SHAPE, quantization="nf4", dtype_bytes=2, lora_params=100, micro_batch=1, seq_len=16,
        checkpointing=True, optimizer="paged_adamw_8bit", materialised_attention=True,
        overhead=7,
    )  # fmt: skip
    # 600 * 4.127 / 8 = 309.525 -> 310 bytes, the other 400 params at 2 bytes
    assert result.weights == 310 + 800
    assert result.optimizer == 200
    # kept layer inputs: 2 layers * 16 tokens * 8 * 2 bytes = 512; one full layer live:
    # 16 tokens * (176 + heads 2 * seq 16) * 2 bytes = 6656
    assert result.activations == 512 + 6656
    assert result.total == 1110 + 800 + 200 + 7168 + 16 * 50 * 8 + 7


def test_int8_weights():
    result = estimate(
        SHAPE, quantization="int8", dtype_bytes=2, lora_params=0, micro_batch=1, seq_len=1,
        checkpointing=False,
    )  # fmt: skip
    assert result.weights == 600 + 400 * 2


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
