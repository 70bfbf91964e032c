"""GGUF export of the families llama.cpp takes LoRA adapters for, on tiny random models built
from config (StarCoder2 and Phi-2 shapes, our byte-level BPE), read back with the gguf reader."""

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import PhiConfig, PhiForCausalLM, Starcoder2Config, Starcoder2ForCausalLM

from repotune.errors import InputError
from repotune.export.gguf import architecture, write_lora, write_model
from testdata.training import train_tokenizer

SIZES = {
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
}
FAMILIES = {
    "starcoder2": (
        lambda: Starcoder2ForCausalLM(Starcoder2Config(**SIZES, num_key_value_heads=2)),
        ["q_proj", "v_proj", "c_fc"],
        {"starcoder2.attention.head_count_kv": 2, "tokenizer.ggml.pre": "starcoder"},
    ),
    "phi": (
        lambda: PhiForCausalLM(PhiConfig(**SIZES)),
        ["q_proj", "dense", "fc2"],
        {"phi2.rope.dimension_count": 4, "tokenizer.ggml.pre": "phi-2"},
    ),
}


def read(path) -> tuple[gguf.GGUFReader, dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    return reader, {tensor.name: np.array(tensor.data) for tensor in reader.tensors}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_model_and_lora_read_back(tmp_path, family):
    build, targets, metadata = FAMILIES[family]
    torch.manual_seed(0)
    tokenizer = train_tokenizer(tmp_path / "tokenizer")
    base = build().eval()
    config = base.config.to_dict()
    write_model(base, tokenizer, tmp_path / "base.gguf", family, "f32")
    adapted = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    adapted.save_pretrained(tmp_path / "adapter")
    merged = adapted.merge_and_unload()
    write_model(merged, tokenizer, tmp_path / "merged.gguf", family, "f32")
    write_lora(tmp_path / "adapter", config, tmp_path / "lora.gguf", family)

    reader, tensors = read(tmp_path / "merged.gguf")
    arch = gguf.MODEL_ARCH_NAMES[architecture(config).arch]
    assert reader.fields["general.architecture"].contents() == arch
    assert reader.fields[f"{arch}.block_count"].contents() == 2
    for key, value in metadata.items():
        assert reader.fields[key].contents() == value
    names = gguf.get_tensor_name_map(architecture(config).arch, 2)
    state = merged.state_dict()
    tied = config["tie_word_embeddings"]
    expected = {
        names.get_name(name, try_suffixes=(".weight", ".bias")): tensor.numpy()
        for name, tensor in state.items()
        if not (tied and name == "lm_head.weight")
    }
    assert set(tensors) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(tensors[name], array)

    _, base_tensors = read(tmp_path / "base.gguf")
    lora_reader, lora = read(tmp_path / "lora.gguf")
    scale = lora_reader.fields["adapter.lora.alpha"].contents() / 4
    changed = {
        name for name in base_tensors if not np.array_equal(base_tensors[name], tensors[name])
    }
    assert {name.removesuffix(".lora_a") for name in lora if name.endswith(".lora_a")} == changed
    assert len(changed) == 2 * len(targets)
    for name in changed:
        update = scale * lora[f"{name}.lora_b"] @ lora[f"{name}.lora_a"]
        np.testing.assert_allclose(base_tensors[name] + update, tensors[name], atol=1e-5)


def test_an_unsupported_family_is_a_one_line_error():
    with pytest.raises(InputError, match="model type 'llama': has no GGUF export here"):
        architecture({"model_type": "llama"})
