"""LoRA target resolution against real (tiny) GPT-2, StarCoder2 and Phi-2 models."""

import pytest
from peft import get_peft_model

from repotune.errors import InputError
from repotune.train.lora import (
    lora_config,
    resolve_targets,
    targets_are_conv1d,
    trainable_parameters,
)
from testdata.models import gpt2, phi, starcoder2


@pytest.mark.parametrize(
    ("build", "family", "expected", "layers"),
    [
        # GPT-2 has c_proj twice a block (attention and MLP): 4 adapted layers per block
        (gpt2, "gpt2", ["c_attn", "c_proj", "c_fc"], 8),
        (starcoder2, "starcoder2", ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"], 12),
        (phi, "phi", ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], 12),
    ],
)
def test_auto_targets_per_architecture_wrap_every_block(build, family, expected, layers):
    model = build()
    targets = resolve_targets(model, "auto", family)
    assert targets == expected
    # the family is also recognised from the model's config when the entry says "auto"
    assert resolve_targets(model, "auto", "auto") == expected
    conv1d = targets_are_conv1d(model, targets)
    assert conv1d == (family == "gpt2")
    wrapped = get_peft_model(
        model, lora_config(targets, r=4, alpha=8, dropout=0.0, fan_in_fan_out=conv1d)
    )
    adapted = {name.rsplit(".", 3)[0] for name, _ in wrapped.named_parameters() if "lora_A" in name}
    assert len(adapted) == layers
    assert {name.rsplit(".", 1)[-1] for name in adapted} == set(expected)
    lora = sum(p.numel() for name, p in wrapped.named_parameters() if ".lora_" in name)
    assert trainable_parameters(wrapped) == lora > 0  # the adapter, and nothing of the base


def test_gpt2_conv1d_is_adapted_and_parameter_count_is_r_times_in_plus_out():
    config = lora_config(["c_attn"], r=4, alpha=8, dropout=0.0, fan_in_fan_out=True)
    wrapped = get_peft_model(gpt2(), config)
    # c_attn is Conv1D 32 -> 96 in each of 2 blocks: 4 * (32 + 96) each.
    assert trainable_parameters(wrapped) == 2 * 4 * (32 + 96)


def test_all_linear_excludes_the_lm_head():
    targets = resolve_targets(starcoder2(), "all-linear")
    assert "lm_head" not in targets
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"}


def test_target_matching_nothing_is_an_input_error_listing_real_names():
    with pytest.raises(InputError, match=r"q_proj match no linear layer of this gpt2.*c_attn"):
        resolve_targets(gpt2(), ["c_attn", "q_proj"])
