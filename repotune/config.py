"""Config validation outside Snakemake (tests, benchmarks, the Python API).

The JSON Schema ``config/schema.yaml`` is the single source of every default; Snakemake's
``validate`` fills them in for the workflow, and :func:`resolve_config` does the same here,
so a function called from a test sees exactly what a rule would pass it.
"""

from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

from repotune.errors import InputError

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema as a mapping."""
    with open(SCHEMA, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


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


def resolve_config(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    Raises :class:`InputError` naming the offending key.
    """
    resolved = deepcopy(config or {})
    validator = _set_defaults_too(Draft202012Validator)(load_schema())
    error = next(iter(validator.iter_errors(resolved)), None)
    if error is not None:
        where = "config" + "".join(f"['{part}']" for part in error.absolute_path)
        raise InputError(where, error.message, "fix it as config/schema.yaml describes")
    return resolved
