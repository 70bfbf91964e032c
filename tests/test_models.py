"""Model presets and entries as the train stage reads them."""

import pytest

from repotune import models
from repotune.config import resolve_config
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
        # Each preset's train keys are valid config values and reach the train settings.
        overrides = train_overrides(spec)
        defaults = resolve_config({})["train"]
        assert resolve_config({"train": overrides})["train"] == defaults | overrides
        assert with_overrides(spec, "train", defaults) == defaults | overrides


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


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"preset": "tiny", "lora_r": 4}, r"entry 'tiny'.*'lora_r' was unexpected"),
        ({"preset": "tiny", "train": {"lora_rank": 4}}, r"\['train'\].*'lora_rank' was unexpected"),
        ({"preset": "tiny", "train": {"lora_r": "four"}}, r"'four' is not of type 'integer'"),
        ({"preset": "tiny", "architecture": {"layers": 2}}, r"'layers' was unexpected"),
        ({"name": "org/model", "base": None}, r"'org/model' does not match"),
    ],
)
def test_model_entry_with_an_unknown_key_or_bad_value_is_one_input_error(entry, message):
    with pytest.raises(InputError, match=message):
        resolve_model(entry)


def test_model_entry_strings_are_coerced_like_the_config():
    spec = resolve_model({"preset": "tiny", "train": {"lora_r": "4"}, "bpe_vocab_size": "512"})
    assert train_overrides(spec)["lora_r"] == 4 and spec.settings["bpe_vocab_size"] == 512


def test_preset_file_with_an_unknown_key_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: mine\nbase: null\ntemplat: plain\n")
    monkeypatch.setattr(models, "PRESET_DIR", tmp_path)
    with pytest.raises(InputError, match=r"config/models/mine.yaml.*'templat' was unexpected"):
        resolve_model("mine")


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
    with pytest.raises(InputError, match="'seq_length' was unexpected"):
        TokenizeSettings.for_model(
            default, resolve_model({"preset": "tiny", "tokenize": {"seq_length": 64}})
        )
