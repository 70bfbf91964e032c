"""Model presets and entries as the train stage reads them."""

import pytest

from repotune.errors import InputError
from repotune.models import architecture, preset_names, resolve_model, train_overrides


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
