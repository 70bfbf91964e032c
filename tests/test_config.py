"""The config schema documents every key, and config/config.yaml is valid against it."""

from pathlib import Path

import pytest
import yaml

from repotune.config import (
    bookkeeping_keys,
    load_schema,
    resolve_config,
    result_config,
    result_settings,
    run_config,
    run_settings,
)
from repotune.errors import InputError
from repotune.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def leaf_keys(schema: dict, prefix: str = "") -> list[tuple[str, dict]]:
    keys = []
    for name, sub in schema.get("properties", {}).items():
        keys.append((prefix + name, sub))
        keys.extend(leaf_keys(sub, prefix + name + "."))
    return keys


@pytest.mark.parametrize(("key", "sub"), leaf_keys(load_schema()), ids=lambda v: str(v)[:40])
def test_every_key_has_type_description_and_default(key, sub):
    assert "description" in sub, key
    assert "default" in sub, key
    assert "type" in sub or "anyOf" in sub or "oneOf" in sub, key


def test_shipped_config_is_valid_and_defaults_fill_in():
    shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    # `make run` (config.yaml) and code outside Snakemake (the schema's defaults) agree.
    assert resolve_config(shipped) == resolve_config({})
    assert resolve_config({})["extract"]["max_patch_bytes"] == 262144


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"nonsense": 1}, "config: Additional properties are not allowed ('nonsense'"),
        ({"extract": {"workers": -1}}, "config['extract']['workers']: -1 is less than"),
    ],
)
def test_bad_config_names_the_key(config, where):
    with pytest.raises(InputError, match=None) as error:
        resolve_config(config)
    assert str(error.value).startswith(where)


@pytest.mark.parametrize(
    ("given", "key", "expected"),
    [
        ({"train": {"num_gpus": "1"}}, ("train", "num_gpus"), 1),
        ({"train": {"num_gpus": "-1"}}, ("train", "num_gpus"), -1),
        ({"tokenize": {"seq_len": "512"}}, ("tokenize", "seq_len"), 512),
        ({"train": {"learning_rate": "1e-4"}}, ("train", "learning_rate"), 0.0001),
        ({"train": {"lora_alpha": "16"}}, ("train", "lora_alpha"), 16),
        ({"train": {"max_steps": "2.0"}}, ("train", "max_steps"), 2),
        ({"train": {"weighted_sampling": "false"}}, ("train", "weighted_sampling"), False),
        ({"extract": {"include_merges": "True"}}, ("extract", "include_merges"), True),
        (
            {"curate": {"recency_half_life_days": "null"}},
            ("curate", "recency_half_life_days"),
            None,
        ),
        ({"evaluate": {"behaviour": {"tests": "null"}}}, ("evaluate", "behaviour", "tests"), None),
        ({"train": {"gradient_checkpointing": "on"}}, ("train", "gradient_checkpointing"), "on"),
        ({"train": {"lora_targets": "all-linear"}}, ("train", "lora_targets"), "all-linear"),
    ],
)
def test_command_line_strings_become_the_schema_type(given, key, expected):
    value = resolve_config(given)
    for part in key:
        value = value[part]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"train": {"num_gpus": "one"}}, "config['train']['num_gpus']: 'one' is not of type"),
        ({"train": {"num_gpus": "1.5"}}, "config['train']['num_gpus']: '1.5' is not of type"),
        (
            {"train": {"weighted_sampling": "maybe"}},
            "config['train']['weighted_sampling']: 'maybe'",
        ),
        ({"train": {"learning_rate": "nan"}}, "config['train']['learning_rate']: 'nan' is not of"),
    ],
)
def test_strings_that_do_not_convert_fail_in_one_line(given, message):
    with pytest.raises(InputError) as error:
        resolve_config(given)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bookkeeping_keys_are_the_checkpoint_hashs_exclusions_and_stay_out_of_params():
    assert {"mem_mb", "logging_steps", "num_gpus"} <= bookkeeping_keys("train")
    train = resolve_config()["train"]
    same = checkpoint.config_hash(train, {})
    for key in bookkeeping_keys("train"):  # a resumed run keeps its checkpoint
        assert checkpoint.config_hash({**train, key: 123}, {}) == same, key
    assert checkpoint.config_hash({**train, "learning_rate": 0.1}, {}) != same
    params = result_settings("train", train)
    assert "mem_mb" not in params and params["learning_rate"] == train["learning_rate"]
    assert run_settings("train", params, train) == train


def test_manifest_params_leave_out_bookkeeping_and_the_script_puts_it_back():
    config = resolve_config({"train": {"mem_mb": 1234}, "evaluate": {"mem_mb": 99}})
    params = result_config(config)
    assert params == result_config(resolve_config())  # mem_mb changes no params value
    assert params["train"]["lora_r"] == config["train"]["lora_r"]
    assert run_config(params, config) == config
