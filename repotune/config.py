"""The config, resolved the same way for the workflow, tests, benchmarks and the Python API.

The JSON Schema ``config/schema.yaml`` is the single source of every default and type.
:func:`resolve_config` coerces command-line strings to the types the schema expects, fills in
the defaults and validates; rules/common.smk calls it on Snakemake's config, so a function
called from a test sees exactly what a rule would pass it.

The schema also marks bookkeeping keys (``x-bookkeeping: true``): settings that change how a
job runs (the memory it declares, GPUs, log and checkpoint intervals, micro-batch) but not
what it produces. They stay out of the rules' params and out of the training checkpoint's
hash, so changing one reruns nothing (:func:`bookkeeping_keys`).
"""

import functools
import math
from collections.abc import Iterator, Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from repotune.errors import InputError

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"

# YAML 1.1 spellings, as a user types them after --config (Snakemake hands nested values over
# as strings).
NULLS = frozenset({"null", "Null", "NULL", "~", ""})
TRUE = frozenset({"true", "yes", "on"})
FALSE = frozenset({"false", "no", "off"})


@functools.cache
def _schema() -> dict[str, Any]:
    """The schema, parsed by libyaml where PyYAML has it: the pure-Python loader takes a
    tenth of a second of every commit hook's run for the same mapping."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SCHEMA, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)


def load_schema() -> dict[str, Any]:
    """The config schema as a mapping (a fresh copy: callers may change it)."""
    return deepcopy(_schema())


def _set_defaults_too(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(
        validator: Any, props: dict[str, Any], instance: Any, schema: dict[str, Any]
    ) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, subschema in props.items():
                if "default" in subschema:
                    instance.setdefault(name, deepcopy(subschema["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def _follow(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or the local definition its ``$ref`` (``#/a/b``) names."""
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema allows (its ``type``, or its ``anyOf``/``oneOf`` branches')."""
    declared = schema.get("type")
    if declared is not None:
        return {declared} if isinstance(declared, str) else set(declared)
    branches = schema.get("anyOf", []) + schema.get("oneOf", [])
    return set().union(*(_types(branch) for branch in branches)) if branches else set()


def _from_string(text: str, types: set[str]) -> Any:
    """``text`` as the first of ``types`` it spells; unchanged when it spells none (validation
    then names the key and the type it wants)."""
    word = text.strip()
    if "null" in types and word in NULLS:
        return None
    if "string" in types:
        return text
    if "boolean" in types and word.lower() in TRUE | FALSE:
        return word.lower() in TRUE
    if types & {"integer", "number"}:
        try:
            return int(word)
        except ValueError:
            pass
        try:
            number = float(word)
        except ValueError:
            return text
        if not math.isfinite(number):
            return text
        if "number" in types:
            return number
        if number.is_integer():
            return int(number)
    return text


def coerce(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``value`` with every string converted to the scalar type the schema expects there.

    Snakemake parses a nested ``--config train='{num_gpus: 1}'`` with YAML's base loader, so
    every scalar in it arrives as a string; this turns ``'1'`` into 1, ``'0.5'`` into 0.5,
    ``'true'`` into True and ``'null'`` into None where the schema asks for those types.
    """
    root = _schema() if root is None else root
    schema = _follow(schema, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            key: coerce(item, properties[key], root) if key in properties else item
            for key, item in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce(item, schema["items"], root) for item in value]
    if isinstance(value, str):
        return _from_string(value, _types(schema))
    return value


def _raise_first(validator: Any, instance: Any, where: str) -> None:
    error = next(iter(validator.iter_errors(instance)), None)
    if error is not None:
        path = where + "".join(f"['{part}']" for part in error.absolute_path)
        raise InputError(path, error.message, "fix it as config/schema.yaml describes")


def resolve_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Coerce ``config``'s strings, validate it and return a copy with every default filled in.

    Raises :class:`InputError` naming the offending key.
    """
    resolved = coerce(deepcopy(config or {}), _schema())
    _raise_first(_set_defaults_too(Draft202012Validator)(_schema()), resolved, "config")
    return resolved


def _without_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_defaults(value) for key, value in schema.items() if key != "default"}
    if isinstance(schema, list):
        return [_without_defaults(item) for item in schema]
    return schema


@functools.cache
def model_entry_schema() -> dict[str, Any]:
    """The schema of a ``models:`` mapping or preset file: ``$defs/model_entry`` with its
    ``tokenize:`` and ``train:`` checked against those sections (without defaults: an entry's
    mapping holds only the keys it overrides)."""
    schema = deepcopy(_schema()["$defs"]["model_entry"])
    for section in ("tokenize", "train"):
        schema["properties"][section] = _without_defaults(_schema()["properties"][section])
    return schema


def check_model_entry(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``entry`` (a models: mapping or a preset file) coerced and validated; an unknown key or
    a wrong type raises :class:`InputError` naming ``where`` and the key."""
    schema = model_entry_schema()
    checked = coerce(dict(entry), schema, schema)
    _raise_first(Draft202012Validator(schema), checked, where)
    return checked


@functools.cache
def bookkeeping_keys(section: str) -> frozenset[str]:
    """The keys of a config section marked ``x-bookkeeping`` in the schema: they change how a
    job runs, not what it produces."""
    properties = _schema()["properties"][section].get("properties", {})
    return frozenset(name for name, sub in properties.items() if sub.get("x-bookkeeping"))


def result_settings(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A config section without its bookkeeping keys: what a rule's params may hold."""
    leave_out = bookkeeping_keys(section)
    return {key: value for key, value in values.items() if key not in leave_out}


def result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config without any section's bookkeeping keys (the manifest's params)."""
    return {
        key: result_settings(key, value) if isinstance(value, Mapping) else value
        for key, value in config.items()
    }


def run_config(params: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`result_config`'s output with the bookkeeping keys put back from ``config``."""
    return {
        key: run_settings(key, value, config[key]) if isinstance(value, Mapping) else value
        for key, value in params.items()
    }


def run_settings(
    section: str, params: Mapping[str, Any], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A job's whole section: its params (:func:`result_settings`) plus the bookkeeping keys
    taken from the resolved config ``values`` at run time."""
    return {**params, **{key: values[key] for key in bookkeeping_keys(section)}}
