"""The config schema documents every key, and config/config.yaml is valid against it."""

from pathlib import Path

import pytest
import yaml

from repotune.config import load_schema, resolve_config
from repotune.errors import InputError

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
    resolved = resolve_config(shipped)
    assert resolved["repo"] == "."
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
