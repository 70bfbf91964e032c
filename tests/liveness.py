"""The machinery of tests/test_liveness.py: does every result-shaping config key shape a result?

A key is result-shaping when it is a rule param: every key of config/schema.yaml not marked
``x-bookkeeping``, and every key of a ``models:`` entry (the keys of config/models/ presets).
The test changes one key at a time from the fixture's value to another valid one and runs the
stages that read it; at least one of them must write something else. Running the workflow per
key would take an hour, so each stage runs alone, here, in this process:

* **Which stages read a key** is the workflow's own notion: a stage reads a key when changing
  it changes the stage's params or its inputs, which is what makes Snakemake rerun it.
  :data:`STAGES` mirrors rules/*.smk and rules/common.smk (the params each rule passes, the
  inputs it asks for, the outputs it names); tests/workflow_params.py asks the Snakefile
  itself, and the test checks the two agree. The manifest, which records the whole config and
  shapes nothing, and compare_models, which reads the reports by model name, are left out;
  the opt-in pretrain_base is in (its params hold the cache key of corpus and settings).
* **Running a stage** runs its real script (scripts/<rule>.py) with a ``snakemake`` object
  built from those params and paths, in a work directory of its own whose inputs are links to
  the default run's outputs at the paths the workflow gives them. So the path from the config
  through the params and the script to the stage's function is the workflow's, and two runs
  differ only in the key.
* **What a stage wrote** is compared as facts, file by file (:func:`output_facts`): JSON,
  CSV, Parquet (rows, row groups and key-value metadata) and text parsed, other files hashed.
  Timings are not compared: facts named so (:data:`TIMING`) and any that differ between two
  runs of the fixture config. Nor is a difference that only repeats the changed value
  (:class:`Echo`: a report that echoes its settings, ``"weighted_sampling": false``): the key
  must change something it shapes. Nor are the facts a stage writes to record the settings it
  ran with (:attr:`Stage.records`: the pretrained base's cache key, a hash of its settings,
  changes with every one of them). An :class:`InputError` is an outcome too: a stage that
  refuses the other value read it (``paged_adamw_8bit`` on a CPU).

Three shortcuts keep the module cheap: evaluate's two plots are written as the JSON of what
they would draw (drawing them costs a second a run and shows nothing the data does not), torch
runs on one thread (a model this small trains and decodes faster so), and the stages' atomic
writes skip ``fsync`` (durability after a power loss is no part of what a stage writes, and on
a shared disk the flushes took 40% of the module's wall time).
"""

import contextlib
import copy
import csv
import functools
import hashlib
import inspect
import io
import json
import math
import os
import re
import runpy
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow.parquet as pq
from snakemake.iocontainers import Namedlist

from repotune.config import load_schema, resolve_config, result_settings
from repotune.errors import InputError
from repotune.evaluate import report
from repotune.export.stage import ExportSettings
from repotune.extract.repository import head_sha
from repotune.models import PRETRAINED_BASE, ModelSpec, resolve_model
from repotune.pretrain.corpus import Corpus, corpus_key, interpreter_places, list_corpus
from repotune.pretrain.settings import MANIFEST, PretrainSettings
from testdata.gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]
MODELS = "models[]"
Config = dict[str, Any]

# --- the keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A result-shaping key: its dotted path (``models[].`` for a model entry's) and schema."""

    path: str
    schema: dict[str, Any] = field(compare=False, repr=False)


def _leaves(schema: Mapping[str, Any], prefix: str) -> Iterator[Key]:
    for name, sub in schema.get("properties", {}).items():
        if sub.get("x-bookkeeping"):
            continue
        if "properties" in sub:
            yield from _leaves(sub, f"{prefix}{name}.")
        elif name == "models":  # a list of entries: each entry's keys (its $ref's)
            yield from _leaves(load_schema()["$defs"]["model_entry"], MODELS + ".")
        else:
            yield Key(prefix + name, sub)


def result_keys() -> list[Key]:
    """Every key of config/schema.yaml that is not bookkeeping, and every model entry key."""
    return list(_leaves(load_schema(), ""))


def _holder(config: Config, path: str) -> tuple[dict[str, Any], str]:
    """The mapping that holds ``path``'s value in ``config``, and its last name."""
    names = path.split(".")
    holder: dict[str, Any] = config
    if names[0] == MODELS:
        holder, names = config["models"][0], names[1:]
    for name in names[:-1]:
        holder = holder.setdefault(name, {})
    return holder, names[-1]


def value_at(config: Config, path: str) -> Any:
    """``path``'s value in ``config`` (KeyError when the config does not set it)."""
    holder, name = _holder(copy.deepcopy(config), path)
    return holder[name]


def with_value(config: Config, path: str, value: Any) -> Config:
    """A copy of ``config`` with ``path`` set to ``value``."""
    changed = copy.deepcopy(config)
    holder, name = _holder(changed, path)
    holder[name] = copy.deepcopy(value)
    return changed


def checked(config: Config) -> Config:
    """``config`` resolved and checked as rules/common.smk does before it plans anything:
    the schema, each models entry, the export formats (InputError when refused)."""
    resolved = resolve_config(config)
    for entry in resolved["models"]:
        resolve_model(entry)
    ExportSettings.from_config(resolved["export"])
    return resolved


# --- another valid value ----------------------------------------------------------------------


class NoAlternative(Exception):
    """The schema does not say which other value a key may take."""


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def schema_alternative(schema: Mapping[str, Any], value: Any) -> Any:
    """Another value ``schema`` allows than ``value``, chosen from the schema alone: null when
    allowed, another enum member, the other boolean, the lowest allowed number (a tenth of the
    way from an exclusive bound; one more when at the bound), an empty list. Strings and
    mappings have none."""
    for branch in schema.get("oneOf", []):
        if _types(branch) & {"integer", "number"} and _fits(branch, value):
            return schema_alternative(branch, value)
    kinds = _types(schema)
    if "null" in kinds and value is not None:
        return None
    if "enum" in schema:
        return next(option for option in schema["enum"] if option != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float) and kinds & {"integer", "number"}:
        return _number(schema, value)
    if "array" in kinds and value != [] and schema.get("minItems", 0) == 0:
        return []
    raise NoAlternative


def _fits(branch: Mapping[str, Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if "integer" in _types(branch) and not isinstance(value, int):
        return False
    above = value > branch.get("exclusiveMinimum", -math.inf)
    below = value < branch.get("exclusiveMaximum", math.inf)
    return above and below and branch.get("minimum", -math.inf) <= value


def _number(schema: Mapping[str, Any], value: float) -> float:
    if "minimum" in schema and value > schema["minimum"]:
        return schema["minimum"]
    if "exclusiveMinimum" in schema and value > schema["exclusiveMinimum"]:
        low = schema["exclusiveMinimum"]
        return low + (value - low) / 10 if "number" in _types(schema) else low + 1
    higher = value + 1
    if higher > schema.get("maximum", math.inf):
        raise NoAlternative
    return float(higher) if isinstance(value, float) else higher


# --- the stages, as the rules wire them -------------------------------------------------------


def snapshot_settings(config: Config) -> dict[str, Any]:
    """rules/common.smk, snapshot_settings."""
    section = {key: value for key, value in config["snapshot"].items() if key != "enabled"}
    curate = config["curate"]
    return {
        "snapshot": section,
        "curate": {"filters": curate["filters"], "redact": curate["redact"]},
    }


def fim_question_settings(config: Config) -> dict[str, Any]:
    """rules/common.smk, fim_question_settings."""
    curate = config["curate"]
    return {
        "samples": config["evaluate"]["fim"]["samples"],
        "seed": config["evaluate"]["seed"],
        "max_file_bytes": config["snapshot"]["max_file_bytes"],
        "curate": {"filters": curate["filters"], "redact": curate["redact"]},
    }


def tokenize_inputs(config: Config) -> dict[str, Any]:
    """rules/common.smk, tokenize_input."""
    inputs: dict[str, Any] = {split: ("curate", split) for split in ("train", "validation", "test")}
    if config["snapshot"]["enabled"] and config["tokenize"]["files"]:
        inputs["files"] = ("snapshot", "files")
    if model_spec(config).base == PRETRAINED_BASE:
        inputs["pretrained"] = ("pretrain_base", "model")
    return inputs


@functools.cache
def _corpus(section: str, repo: str) -> Corpus:
    """The corpus a ``pretrain.corpus`` section lists, once per section and repository (the
    test changes no file)."""
    return list_corpus(json.loads(section), repo, interpreter_places())


def pretrain_key(config: Config) -> str:
    """rules/common.smk, pretrain_key (repotune.pretrain.settings.plan), without the blob-id
    cache, which only saves reading the files again."""
    settings = PretrainSettings.from_config(config["pretrain"], config["train"])
    corpus = _corpus(json.dumps(settings.corpus, sort_keys=True), config["repo"])
    return corpus_key(corpus, settings.shaping())


def evaluate_inputs(config: Config) -> dict[str, Any]:
    """rules/common.smk, evaluate_inputs."""
    inputs: dict[str, Any] = {
        "adapter": ("train", "adapter"),
        "base": ("train", "base"),
        "tokenizer": ("tokenize", "tokenizer"),
        "test_shards": ("tokenize", "test"),
        "shard_stats": ("tokenize", "stats"),
        "test_commits": ("curate", "test"),
    }
    tests = config["evaluate"]["behaviour"]["tests"]
    if tests is not None:
        inputs["behaviour_tests"] = tests
    if config["evaluate"]["fim"]["enabled"]:
        inputs["fim_questions"] = ("fim_questions", "questions")
    return inputs


@dataclass(frozen=True)
class Stage:
    """One rule: its outputs, threads, params and inputs (an input is another rule's output,
    ``(rule, name)``, or a path), as rules/<file>.smk declares them, the code hash left out;
    and ``records``, the places of facts it writes to record the settings it ran with, not
    what they shaped, which are never compared."""

    outputs: dict[str, str]
    params: Callable[[Config], dict[str, Any]]
    inputs: Callable[[Config], dict[str, Any]] = lambda config: {}
    threads: int = 1
    enabled: Callable[[Config], bool] = lambda config: True
    records: frozenset[tuple[str, ...]] = frozenset()


def model_entry(config: Config) -> Any:
    return config["models"][0]


@functools.cache
def _resolved(entry: str) -> ModelSpec:
    return resolve_model(json.loads(entry))


def model_spec(config: Config) -> ModelSpec:
    """The config's (first) model entry resolved, once per entry: reading its preset costs."""
    return _resolved(json.dumps(model_entry(config), sort_keys=True))


def model_name(config: Config) -> str:
    return model_spec(config).name


@functools.cache
def head(repo: str) -> str:
    """The repository's HEAD (rules/common.smk, resolved_head); the test commits nothing."""
    return head_sha(repo)


# In the order a run needs them; cheap ones first where the order is free, since a key's
# readers are tried in this order until one changes.
STAGES: dict[str, Stage] = {
    # Opt-in (not in `rule all`), and wired whatever the config; its script reads the
    # pretrain: section and the repository from the config, which the key covers.
    "pretrain_base": Stage(
        outputs={
            "model": PRETRAINED_BASE,
            "manifest": os.path.join(os.path.dirname(PRETRAINED_BASE), MANIFEST),
        },
        params=lambda c: {"key": pretrain_key(c), "places": interpreter_places()},
        threads=2,
        # The cache key (a hash of corpus and settings; also in the entry's path and the work
        # directory's, which the trainer records as the base it started from) and the settings
        # themselves, the trainer's as it was handed them: the model, its tokenizer, corpus,
        # documents and loss curve are compared.
        records=frozenset(
            {
                ("manifest", "key"),
                ("manifest", "cache"),
                ("manifest", "settings"),
                ("model", "training_summary.json", "base_model"),
                ("model", "training_summary.json", "settings"),
            }
        ),
    ),
    "extract_commits": Stage(
        outputs={"commits": "results/commits.parquet", "stats": "results/commits.stats.json"},
        params=lambda c: {
            "repo": c["repo"],
            "head": head(c["repo"]),
            "settings": c["extract"],
            "cache": "results/cache/commits.parquet",
        },
        threads=2,  # rule threads 8, as many as the 2 cores --cores 2 gives
    ),
    "curate": Stage(
        outputs={
            "train": "results/dataset/train.parquet",
            "validation": "results/dataset/validation.parquet",
            "test": "results/dataset/test.parquet",
            "report": "results/dataset/curation.json",
        },
        params=lambda c: {"settings": c["curate"]},
        inputs=lambda c: {"commits": ("extract_commits", "commits")},
    ),
    "snapshot": Stage(
        outputs={
            "files": "results/snapshot/files.parquet",
            "report": "results/snapshot/snapshot.json",
        },
        params=lambda c: {"repo": c["repo"], "settings": snapshot_settings(c)},
        inputs=lambda c: {"train": ("curate", "train")},
        enabled=lambda c: c["snapshot"]["enabled"],
    ),
    "fim_questions": Stage(
        outputs={
            "questions": "results/fim/questions.parquet",
            "report": "results/fim/fim_questions.json",
        },
        params=lambda c: {"repo": c["repo"], "settings": fim_question_settings(c)},
        inputs=lambda c: {"test": ("curate", "test")},
        enabled=lambda c: c["evaluate"]["fim"]["enabled"],
    ),
    "tokenize": Stage(
        outputs={
            "tokenizer": "results/{model}/tokenizer",
            "train": "results/{model}/shards/train",
            "validation": "results/{model}/shards/validation",
            "test": "results/{model}/shards/test",
            "stats": "results/{model}/shards/stats.json",
            "preview": "results/{model}/shards/preview.md",
        },
        params=lambda c: {
            "settings": c["tokenize"],
            "model": asdict(model_spec(c)),
        },
        inputs=tokenize_inputs,
    ),
    "export": Stage(
        outputs={"export": "results/{model}/export"},
        params=lambda c: {"settings": c["export"]},
        inputs=lambda c: {
            "adapter": ("train", "adapter"),
            "base": ("train", "base"),
            "tokenizer": ("tokenize", "tokenizer"),
            "shard_stats": ("tokenize", "stats"),
        },
    ),
    "train": Stage(
        outputs={"adapter": "results/{model}/adapter", "base": "results/{model}/base"},
        params=lambda c: {
            "model": model_entry(c),
            "settings": result_settings("train", c["train"]),
            "state": "results/{model}/train_state",
        },
        inputs=lambda c: {
            "train": ("tokenize", "train"),
            "validation": ("tokenize", "validation"),
            "tokenizer": ("tokenize", "tokenizer"),
        },
    ),
    "evaluate": Stage(
        outputs={
            "report": "results/{model}/eval/report.md",
            "json": "results/{model}/eval/report.json",
            "generations": "results/{model}/eval/generations.jsonl",
            "loss_curves": "results/{model}/eval/loss_curves.png",
            "metrics_plot": "results/{model}/eval/metrics.png",
        },
        params=lambda c: {
            "settings": result_settings("evaluate", c["evaluate"]),
            "redact": c["curate"]["redact"],
        },
        inputs=evaluate_inputs,
    ),
}
RUN_ORDER = (
    "pretrain_base", "extract_commits", "curate", "snapshot", "fim_questions", "tokenize",
    "train", "evaluate", "export",
)  # fmt: skip


def plan(stage: str, config: Config) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What makes Snakemake rerun ``stage``: its params and its inputs (None when the config
    leaves the stage out)."""
    if not STAGES[stage].enabled(config):
        return None
    wired = wiring(stage, config)
    return wired["params"], wired["input"]


def readers(base: Config, variant: Config) -> list[str]:
    """The stages whose params or inputs differ between the two configs (both run them), in
    the order they are tried."""
    found = []
    for stage in STAGES:
        before, after = plan(stage, base), plan(stage, variant)
        if before is not None and after is not None and before != after:
            found.append(stage)
    return found


# --- running a stage --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """Where a stage ran and with which config (a later stage links its inputs there)."""

    workdir: Path
    config: Config


@dataclass(frozen=True)
class Outcome:
    """What a stage run left: its outputs' facts by output name, or the InputError it raised."""

    facts: dict[str, Any] | None
    error: str | None = None


def _paths(stage: str, config: Config) -> dict[str, str]:
    model = model_name(config)
    return {name: path.format(model=model) for name, path in STAGES[stage].outputs.items()}


def wiring(stage: str, config: Config) -> dict[str, dict[str, Any]]:
    """The params, inputs and outputs :data:`STAGES` gives ``stage`` under ``config``, with
    ``{model}`` filled in, as the workflow would hand them to the stage's script."""
    rule, model = STAGES[stage], model_name(config)
    inputs = {
        name: _paths(source[0], config)[source[1]] if isinstance(source, tuple) else source
        for name, source in rule.inputs(config).items()
    }
    params = {
        name: value.format(model=model) if isinstance(value, str) else value
        for name, value in rule.params(config).items()
    }
    return {"params": params, "input": inputs, "output": _paths(stage, config)}


def _draw_as_data(plot: Callable[..., None]) -> Callable[..., None]:
    """A stand-in for a plot function of repotune.evaluate.report: writes to its ``path`` the
    JSON of its other arguments, which is what the drawing shows."""
    signature = inspect.signature(plot)

    def write(*args: Any, **kwargs: Any) -> None:
        drawn = signature.bind(*args, **kwargs).arguments
        path = Path(drawn.pop("path"))
        path.write_text(json.dumps(drawn, default=repr, sort_keys=True), encoding="utf-8")

    return write


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    before, paths = os.getcwd(), list(sys.path)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)
        sys.path[:] = paths


def run_stage(
    stage: str,
    config: Config,
    workdir: Path,
    upstream: Mapping[str, Ran],
    patches: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> Outcome:
    """Run ``stage``'s script with ``config`` in ``workdir``; its inputs are links to the
    outputs of earlier runs (``upstream``: rule -> where and how it ran)."""
    rule, wired = STAGES[stage], wiring(stage, config)
    workdir.mkdir(parents=True)
    for name, source in rule.inputs(config).items():
        if isinstance(source, tuple):
            producer, output = source
            ran = upstream[producer]
            written = _paths(producer, ran.config)[output]
            # Also where the upstream run wrote it: outputs name each other by path (an
            # adapter its base), and a renamed model moves the path this run reads.
            for link in {workdir / wired["input"][name], workdir / written}:
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(ran.workdir / written)
    for path in wired["output"].values():
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
    snakemake = types.SimpleNamespace(
        input=Namedlist(fromdict=wired["input"]),
        output=Namedlist(fromdict=wired["output"]),
        params=Namedlist(fromdict=wired["params"]),
        log=Namedlist(fromdict={"log": f"logs/{stage}.log"}),
        threads=rule.threads,
        resources=types.SimpleNamespace(gpu=0),
        wildcards=types.SimpleNamespace(model=model_name(config)),
        config=config,
        scriptdir=str(ROOT / "scripts"),
    )
    (workdir / "logs").mkdir()
    with (
        _in_directory(workdir),
        mock.patch("repotune.logs.run_job", lambda log, job: job()),
        mock.patch("os.fsync", lambda descriptor: None),
        mock.patch.object(report, "plot_loss_curves", _draw_as_data(report.plot_loss_curves)),
        mock.patch.object(report, "plot_metrics", _draw_as_data(report.plot_metrics)),
        patches() if patches is not None else contextlib.nullcontext(),
    ):
        try:
            runpy.run_path(str(ROOT / "scripts" / f"{stage}.py"), {"snakemake": snakemake})
        except InputError as error:
            return Outcome(facts=None, error=str(error))
    return Outcome({name: output_facts(workdir / path) for name, path in wired["output"].items()})


# --- what a stage wrote -----------------------------------------------------------------------

HASHED = {".arrow", ".safetensors", ".gguf", ".png", ".bin", ".pt"}


@dataclass(frozen=True)
class Blob:
    """A binary file, compared by its bytes' sha256 (its path kept to look for an echo)."""

    sha256: str
    path: Path = field(compare=False)


def output_facts(path: Path) -> Any:
    """An output as comparable facts: a directory file by file, parsed where its format is
    known, hashed otherwise."""
    if path.is_dir():
        return {
            str(item.relative_to(path)): file_facts(item)
            for item in sorted(path.rglob("*"))
            if item.is_file()
        }
    return file_facts(path) if path.exists() else "<missing>"


def file_facts(path: Path) -> Any:
    suffix = path.suffix
    if suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if suffix == ".csv":
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    if suffix == ".parquet":
        return parquet_facts(path)
    data = path.read_bytes()
    if suffix not in HASHED:
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode("utf-8").splitlines()
    return Blob(hashlib.sha256(data).hexdigest(), path)


def parquet_facts(path: Path) -> dict[str, Any]:
    """Rows, row-group sizes and key-value metadata (JSON values parsed: several stages
    record their settings there)."""
    parquet = pq.ParquetFile(path)
    metadata = {}
    for key, value in (parquet.schema_arrow.metadata or {}).items():
        text = value.decode("utf-8", "replace")
        try:
            metadata[key.decode()] = json.loads(text)
        except json.JSONDecodeError:
            metadata[key.decode()] = text
    return {
        "metadata": metadata,
        "row_groups": [
            parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)
        ],
        "rows": parquet.read().replace_schema_metadata().to_pylist(),
    }


# --- comparing --------------------------------------------------------------------------------

Where = tuple[Any, ...]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or f"{a:.6g}" == f"{b:.6g}"
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Echo:
    """A key changed from ``old`` to ``new``: a fact that changes exactly so (or a text in which
    the one value becomes the other) only repeats the setting. For a number or a boolean that
    holds only under the key's own name (:meth:`_named`; a count that goes from 1 to 2 with
    ``min_epochs`` is an effect), or in a text that names the key."""

    name: str
    old: Any
    new: Any

    def repeats(self, a: Any, b: Any, where: Where) -> bool:
        if _equal(a, self.old) and _equal(b, self.new):
            return not self.numeric or any(self._named(part) for part in where)
        if isinstance(a, str) and isinstance(b, str):
            return (not self.numeric or self._names(a)) and self.renamed(a) == b
        if isinstance(a, Blob) and isinstance(b, Blob) and not self.numeric:
            data, other = a.path.read_bytes(), b.path.read_bytes()
            return any(
                data.replace(old.encode(), new.encode()) == other for old, new in self._spellings()
            )
        return False

    def renamed(self, text: str) -> str | None:
        """``text`` with the old value spelt as the new one (None when it does not hold it)."""
        for old, new in self._spellings():
            token = rf"(?<![\w.\-]){re.escape(old)}(?![\w.])"
            changed = re.sub(token, new.replace("\\", "\\\\"), text)
            if changed != text:
                return changed
        return None

    @property
    def numeric(self) -> bool:
        """Whether the key is a number or a boolean (whose values recur by chance)."""
        return isinstance(self.old, bool | int | float) or isinstance(self.new, bool | int | float)

    def _named(self, part: Any) -> bool:
        """Whether a fact's name is the key's, or one ends with the other (a report's
        ``half_life_days`` for ``recency_half_life_days``, ``gguf_lora`` for ``lora``)."""
        if not isinstance(part, str):
            return False
        return part == self.name or part.endswith(f"_{self.name}") or self.name.endswith(f"_{part}")

    def _names(self, line: str) -> bool:
        words = self.name.lower().split("_")
        return any(sep.join(words) in line.lower() for sep in ("_", " ", "-"))

    def _spellings(self) -> list[tuple[str, str]]:
        pairs = [(str(self.old), str(self.new)), (json.dumps(self.old), json.dumps(self.new))]
        return [(old, new) for old, new in dict(pairs).items() if old and old != new]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


# Facts that measure the run, not its result: by their name, or a line of text that says so.
TIMING = re.compile(r"seconds|per_s\b|per second|tokens/s|peak_memory|memory_bytes|wall", re.I)


def _timing(a: Any, where: Where) -> bool:
    named = bool(where) and isinstance(where[-1], str) and TIMING.search(where[-1]) is not None
    return named or (isinstance(a, str) and TIMING.search(a) is not None)


def differences(
    a: Any, b: Any, volatile: set[Where], echo: Echo | None, where: Where = ()
) -> list[Where]:
    """Where ``b`` differs from ``a``, leaving out ``volatile`` places, timings and mere
    echoes."""
    if where in volatile or _timing(a, where) or (echo is not None and echo.repeats(a, b, where)):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return _dict_differences(a, b, volatile, echo, where)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = []
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found += differences(x, y, volatile, echo, (*where, index))
        return found
    return [] if _same(a, b) else [where]


def _dict_differences(
    a: dict[Any, Any], b: dict[Any, Any], volatile: set[Where], echo: Echo | None, where: Where
) -> list[Where]:
    """As :func:`differences`; a name that holds the changed value is matched to the other
    side's name that holds the new one (an export's ``gguf/tiny-f16.gguf``)."""
    pairs = {key: key for key in a if key in b}
    if echo is not None and not echo.numeric:
        for key in a:
            other = echo.renamed(key) if isinstance(key, str) else None
            if key not in b and other in b and other not in a:
                pairs[key] = other
    found = []
    for key, other in sorted(pairs.items(), key=str):
        found += differences(a[key], b[other], volatile, echo, (*where, key))
    unmatched = (set(a) - set(pairs)) | (set(b) - set(pairs.values()))
    return found + [
        (*where, key) for key in sorted(unmatched, key=str) if (*where, key) not in volatile
    ]


def outcome_differences(
    a: Outcome, b: Outcome, volatile: set[Where], echo: Echo | None
) -> list[Where]:
    """How two runs' outcomes differ (an error message is an outcome)."""
    if a.error is not None or b.error is not None:
        if a.error == b.error or (echo is not None and echo.repeats(a.error, b.error, ())):
            return []
        return [("error",)]
    return differences(a.facts, b.facts, volatile, echo)


def describe(where: Where) -> str:
    return "/".join(str(part) for part in where)[:160]


# --- the fixture ------------------------------------------------------------------------------


def _module(name: str, functions: int, offset: int = 0) -> str:
    """A small Python module: ``functions`` functions, each returning a sum."""
    return "".join(
        f"def {name}_{i}(value):\n    total = value + {i + offset}\n    return total * {i + 2}\n\n"
        for i in range(functions)
    )


FORMATTER = "".join(
    f"def format_{name}(value):\n    text = str(value).strip()\n    return text.{name}()\n\n"
    for name in ("upper", "lower", "title", "casefold", "swapcase", "capitalize")
)


def fixture_repository(path: Path) -> GitRepo:
    """A history with one commit for each thing a key decides: a bot's commit, a revert, a
    trivial and a one-word message, a squash-merge subject, generated, binary-only and
    oversized changes, a re-applied patch, a rename, a real merge, near-copies of a file,
    secrets and an e-mail address; then ordinary commits for validation and test."""
    repo = GitRepo(path)
    repo.commit(
        "Add the parser module\n\nParses settings files line by line.",
        {"pkg/parser.py": _module("parse", 4), "README.md": "# demo\n\nA tiny project.\n"},
    )
    repo.commit(
        "Add the config loader\n\nAsk dev@example.com about the settings.",
        {"pkg/config.py": 'password = "aaaabbbbcc"\napi_key = "q8Zk2"\n\n' + _module("load", 3)},
    )
    repo.write("requirements.txt", "requests==2.0\n")
    repo.git("add", "-A")
    repo.clock += 3600
    repo.git(
        "commit", "-q", "--author=dependabot[bot] <bot@example.com>", "-m", "Bump requests to 2.0"
    )
    debug = repo.commit("Add a debug switch to the loader", {"pkg/debug.py": "DEBUG = True\n"})
    (repo.path / "pkg" / "debug.py").unlink()
    repo.commit(f'Revert "Add a debug switch to the loader"\n\nThis reverts commit {debug}.')
    repo.commit("wip", {"pkg/parser.py": _module("parse", 5)})
    repo.commit("Minor fixes", {"pkg/parser.py": _module("parse", 6)})
    repo.commit(
        "Refactor",
        {"pkg/config.py": 'password = "aaaabbbbcc"\napi_key = "q8Zk2"\n\n' + _module("load", 4)},
    )
    repo.commit("Merge branch 'feature' into main", {"pkg/feature.py": _module("feature", 2)})
    repo.commit(
        "Lock the dependencies and add the command line",
        {"package-lock.json": '{"lockfileVersion": 3}\n', "pkg/cli.py": _module("run", 3)},
    )
    repo.commit("Build the bundle for the browser", {"dist/app.min.js": "var a=1;" * 20 + "\n"})
    repo.commit("Add the project logo", {"logo.png": bytes(range(256)) * 8})
    repo.commit(
        "Add the word list the parser checks against",
        {
            "pkg/words.py": "WORDS = [\n"
            + "".join(f'    "word{i:05d}",\n' for i in range(400))
            + "]\n"
        },
    )
    net = _module("retry", 2)
    repo.commit("Add the network client", {"pkg/net.py": net})
    repo.commit("Limit the retries of the client", {"pkg/net.py": net + "RETRIES = 3\n"})
    repo.commit("Drop the retry limit for now", {"pkg/net.py": net})
    repo.commit("Bring the retry limit back", {"pkg/net.py": net + "RETRIES = 3\n"})
    repo.git("mv", "pkg/cli.py", "pkg/command.py")
    repo.commit("Rename the command line module")
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("Add the side helper module", {"pkg/side.py": _module("side", 2)})
    repo.git("checkout", "-q", "main")
    repo.commit("Add the main helper module", {"pkg/main.py": _module("main", 2)})
    repo.clock += 3600
    repo.git("merge", "-q", "--no-ff", "-m", "Combine the side helpers", "side")
    repo.commit(
        "Add the text formatters in three flavours",
        {
            "pkg/format_a.py": FORMATTER,
            "pkg/format_b.py": FORMATTER.replace("strip()", "rstrip()", 1),
            "pkg/format_c.py": FORMATTER.replace("text", "value_text", 2),
        },
    )
    for number in range(6):  # validation and test: each adds lines to a Python module
        repo.commit(
            f"Add step {number} to the pipeline\n\nThe pipeline runs it after step {number - 1}.",
            {f"pkg/step{number}.py": _module(f"step{number}", 2 + number % 3, number)},
        )
    return repo


BEHAVIOUR_TESTS = r"""
- name: subject-has-two-words
  task: commit_message
  must_match: ['(?i)\A\s*[a-z]+\W+[a-z]']
- name: completes-a-function
  prompt: "def add(a, b):\n"
  prepend_prompt: true
  must_match: ['return']
- name: runs-the-function
  prompt: "def add(a, b):\n"
  prepend_prompt: true
  timeout_s: 5
  python_test: |
    from generated import add
    assert add(1, 2) == 3
"""
