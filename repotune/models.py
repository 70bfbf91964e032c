"""Model entries: which base model, tokenizer and text template a `{model}` name stands for.

A config's ``models:`` list holds preset names (files in ``config/models/``), Hugging Face
model ids or local paths, or full mappings. Every stage that needs a model resolves the
entry here, so a name means the same thing to the tokenizer, the trainer and the evaluator.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repotune.config import check_model_entry, load_schema
from repotune.errors import InputError

PRESET_DIR = Path(__file__).resolve().parent.parent / "config" / "models"
TEMPLATES = ("plain", "starcoder", "starcoder2")
# A model's name is the {model} wildcard and a folder under results/: no "/" or spaces.
MODEL_NAME = r"[A-Za-z0-9._-]+"
# Config sections a model entry may override with a mapping of the same name.
STAGE_SECTIONS = ("tokenize", "train")
# The base the pretrain_base rule builds (repotune.pretrain), relative to the directory the
# workflow runs in: a model entry whose base is this path (the local-python preset) waits
# for that rule, and it is local even before it exists.
PRETRAINED_BASE = "results/pretrained/model"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model entry.

    ``base`` is a Hugging Face id or local path, or None for a model built from
    ``architecture`` (the offline tiny default). ``tokenizer`` is an id or path, or
    ``"train-bpe"`` for a byte-level BPE trained on the training split.
    """

    name: str
    family: str
    base: str | None
    tokenizer: str
    template: str
    settings: dict[str, Any] = field(default_factory=dict)


def preset_names() -> list[str]:
    """The names of the presets shipped in ``config/models/``."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def safe_name(model_id: str) -> str:
    """A file-system and wildcard safe name for a model id (``org/model`` -> ``org--model``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id.replace("/", "--")).strip("-")


def _from_mapping(entry: dict[str, Any]) -> ModelSpec:
    known = {"name", "family", "base", "tokenizer", "template"}
    base = entry.get("base")
    name = entry.get("name") or (safe_name(base) if base else None)
    if not name:
        raise InputError("config 'models'", f"entry {entry} has neither name nor base", "add one")
    if not re.fullmatch(MODEL_NAME, name):
        raise InputError(
            f"config 'models' name '{name}'",
            "has characters other than letters, digits, '.', '_' and '-'",
            "rename it: it becomes a folder under results/",
        )
    template = entry.get("template", "plain")
    if template not in TEMPLATES:
        raise InputError(
            f"config 'models' entry '{name}'",
            f"template '{template}' is unknown",
            f"use one of {', '.join(TEMPLATES)}",
        )
    return ModelSpec(
        name=name,
        family=entry.get("family", "auto"),
        base=base,
        tokenizer=entry.get("tokenizer") or base or "train-bpe",
        template=template,
        settings={key: value for key, value in entry.items() if key not in known},
    )


def load_preset(name: str) -> dict[str, Any]:
    """The mapping stored in ``config/models/<name>.yaml``."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InputError(
            f"model preset '{name}'",
            "does not exist",
            f"use one of {', '.join(preset_names())} or a full mapping",
        )
    with open(path, encoding="utf-8") as handle:
        preset = yaml.safe_load(handle)
    return check_model_entry(preset or {}, f"model preset '{name}' (config/models/{name}.yaml)")


def stage_overrides(spec: ModelSpec, section: str) -> dict[str, Any]:
    """The keys a model entry sets over the config's ``section`` (``tokenize`` or ``train``).

    A preset knows what its model needs (StarCoder2-3B only fits a 6 GB GPU in 4-bit, the tiny
    CPU model trains on short blocks), so its ``tokenize:`` and ``train:`` mappings replace the
    schema's defaults for that model (:func:`with_overrides`); a mapping entry with ``preset:``
    and its own mappings changes a preset's values.
    """
    overrides = spec.settings.get(section) or {}
    if not isinstance(overrides, dict):
        raise InputError(
            f"config 'models' entry '{spec.name}'",
            f"'{section}' is not a mapping",
            "give key: value",
        )
    return dict(overrides)


def train_overrides(spec: ModelSpec) -> dict[str, Any]:
    """The ``train:`` keys a model entry sets over the config's ``train:`` section."""
    return stage_overrides(spec, "train")


def with_overrides(spec: ModelSpec, section: str, config_section: dict[str, Any]) -> dict[str, Any]:
    """The settings ``section`` (``tokenize`` or ``train``) has for this model.

    The model entry's value replaces the schema's default; a value the config sets to anything
    other than the default wins, for every model (``--config tokenize='{seq_len: 512}'`` means
    512 for the tiny preset too). A key the section does not have is an :class:`InputError`:
    a typo would otherwise be ignored.
    """
    overrides = stage_overrides(spec, section)
    unknown = sorted(set(overrides) - set(config_section))
    if unknown:
        raise InputError(
            f"model '{spec.name}' {section} settings",
            f"unknown keys {', '.join(unknown)}",
            f"use keys of the config's {section}: section (config/schema.yaml)",
        )
    defaults = section_defaults(section)
    settings = dict(config_section)
    for key, value in overrides.items():
        if key not in defaults or config_section[key] == defaults[key]:
            settings[key] = value
    return settings


def section_defaults(section: str) -> dict[str, Any]:
    """The schema's default of every key of a config section."""
    properties = load_schema()["properties"][section]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def architecture(spec: ModelSpec) -> dict[str, Any]:
    """GPT-2 config keys (n_layer, n_head, n_embd, ...) of a model built from config."""
    return dict(spec.settings.get("architecture") or {})


def require_downloaded(spec: ModelSpec) -> None:
    """While the Hugging Face hub is off (``HF_HUB_OFFLINE=1``), every hub model and tokenizer
    an entry names must already be in the local cache: the plan fails in one line instead of
    the tokenize job, minutes later, with the hub's multi-line message."""
    hub = [
        (what, source)
        for what, source in (("model", spec.base), ("tokenizer", spec.tokenizer))
        if source not in (None, "train-bpe", PRETRAINED_BASE) and not Path(source).exists()
    ]
    if not hub:
        return  # nothing to download: do not pay for importing huggingface_hub at parse time
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    if not is_offline_mode():
        return
    for what, source in hub:
        files = ("config.json", "tokenizer_config.json", "tokenizer.json")
        if not any(isinstance(try_to_load_from_cache(source, name), str) for name in files):
            raise InputError(
                f"config 'models' entry '{spec.name}'",
                f"{what} '{source}' is not in the local Hugging Face cache and the hub is off "
                "(HF_HUB_OFFLINE=1)",
                f"download it ahead with `hf download {source}` on a connected machine, "
                "or unset HF_HUB_OFFLINE",
            )


def resolve_model(entry: str | dict[str, Any]) -> ModelSpec:
    """Resolve a ``models:`` entry: a preset name, a hub id or local path, or a mapping.

    A mapping may name a ``preset`` and override some of its keys.
    """
    if isinstance(entry, dict):
        label = entry.get("name") or entry.get("preset") or entry.get("base")
        entry = check_model_entry(entry, f"config 'models' entry '{label}'")
        merged = dict(entry)
        if "preset" in entry:
            preset = load_preset(entry["preset"])
            merged = {**preset, **entry}
            for section in STAGE_SECTIONS:
                merged[section] = {**(preset.get(section) or {}), **(entry.get(section) or {})}
        merged.pop("preset", None)
        return _from_mapping(merged)
    if entry in preset_names():
        return _from_mapping(load_preset(entry))
    if "/" in entry or Path(entry).exists():
        return _from_mapping({"base": entry, "name": safe_name(entry)})
    raise InputError(
        f"config 'models' entry '{entry}'",
        "is neither a preset nor a model id or path",
        f"use a preset ({', '.join(preset_names())}), an 'org/model' hub id or a local path",
    )
