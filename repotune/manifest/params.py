"""The manifest rule's params in one canonical form, whatever order the config came in.

Snakemake reruns a rule when the ``repr`` of a params value changes, and a dict's ``repr``
follows its insertion order. The manifest's params hold the whole resolved config, whose key
order follows how the config files were merged: ``--configfile`` with just
``train: {mem_mb: ...}`` puts ``train`` first. Without a canonical order, changing a
bookkeeping key that way reran the manifest although its value never reaches the params.
"""

from collections.abc import Mapping
from typing import Any


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, recursively (lists keep their order: in a
    config, their order means something)."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    return value
