"""Model presets and entries as the train stage reads them."""

import pytest

from repotune.errors import InputError
from repotune.models import (
    architecture,
    preset_names,
    resolve_model,
    train_overrides,
    with_overrides,
)


def test_all_presets_resolve():
    assert {"tiny", "gpt2", "gpt2-medium", "starcoder2-3b", "starcoder2-7b", "phi-2"} <= set(
        preset_names()
    )
    for name in preset_names():
        spec = resolve_model(name)
        assert spec.name == name
        assert isinstance(train_overrides(spec), dict)


def test_tiny_is_built_from_config_and_big_models_default_to_nf4():
    tiny = resolve_model("tiny")
    assert tiny.base is None and set(architecture(tiny)) == {"n_layer", "n_head", "n_embd"}
    assert train_overrides(resolve_model("starcoder2-3b"))["quantization"] == "nf4"
    assert resolve_model("phi-2").family == "phi"


def test_mapping_overrides_merge_with_the_preset_train_keys():
    spec = resolve_model({"preset": "starcoder2-3b", "train": {"lora_r": 4}})
    assert train_overrides(spec) == {"quantization": "nf4", "lora_r": 4}


def test_unknown_preset_is_an_input_error():
    with pytest.raises(InputError, match=r"preset 'no-such-model'.*does not exist"):
        resolve_model({"preset": "no-such-model"})
    with pytest.raises(InputError, match="neither a preset"):
        resolve_model("no-such-model")


def test_a_preset_sets_its_tokenize_defaults_and_a_config_value_wins():
    from repotune.config import resolve_config
    from repotune.shards.stage import TokenizeSettings

    tiny, gpt2 = resolve_model("tiny"), resolve_model("gpt2")
    default = resolve_config({})["tokenize"]
    assert TokenizeSettings.for_model(default, tiny).seq_len == 256
    assert TokenizeSettings.for_model(default, gpt2).seq_len == default["seq_len"] == 1024
    chosen = resolve_config({"tokenize": {"seq_len": 512}})["tokenize"]
    assert TokenizeSettings.for_model(chosen, tiny).seq_len == 512
    entry = resolve_model({"preset": "tiny", "tokenize": {"seq_len": 128}})
    assert TokenizeSettings.for_model(default, entry).seq_len == 128
    assert with_overrides(tiny, "train", resolve_config({})["train"])["max_steps"] == 150
    with pytest.raises(InputError, match="unknown keys seq_length"):
        TokenizeSettings.for_model(
            default, resolve_model({"preset": "tiny", "tokenize": {"seq_length": 64}})
        )
