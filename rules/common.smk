# Helpers shared by every stage: config resolution, the repository's HEAD, the model wildcard,
# the GPU count, and the manifest's view of the other rules (read from the rules themselves).
# Bad input stops the workflow with one line (sys.exit), never a traceback.
# The Snakefile's directory is on sys.path (Snakemake puts it there), so repotune imports here.
import functools
import os
import shutil
import subprocess
import sys
from dataclasses import asdict

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from repotune.codehash import CodeHasher
from repotune.config import resolve_config, result_config, result_settings
from repotune.errors import InputError
from repotune.export.stage import ExportSettings
from repotune.extract.repository import head_sha, shallow_warning
from repotune.manifest.params import canonical
from repotune.models import (
    MODEL_NAME,
    PRETRAINED_BASE,
    require_downloaded,
    resolve_model,
)
from repotune.pretrain.corpus import BLOB_CACHE, interpreter_places
from repotune.pretrain.settings import MANIFEST, PretrainSettings, plan

min_version("9.0")


def stop(error):
    """End the run with the one-line message of an InputError."""
    sys.exit(f"repotune error: {error}")


# Validate, fill every default from config/schema.yaml and coerce --config strings, in place:
# the rules and the jobs' scripts then see one resolved config. Each models: entry is resolved
# once, here, so a bad entry or preset stops the run before anything else is looked at.
def resolve_models(entries):
    """Resolved name -> (the entry as configured, its ModelSpec)."""
    resolved = {}
    for entry in entries:
        spec = resolve_model(entry)
        require_downloaded(
            spec
        )  # offline, a hub model missing from the cache stops the plan
        if spec.name in resolved:
            raise InputError(
                "config 'models'",
                f"two entries are named '{spec.name}'",
                "give each its own name",
            )
        resolved[spec.name] = (entry, spec)
    return resolved


try:
    config.update(resolve_config(config))
    MODELS = resolve_models(config["models"])
except InputError as error:
    stop(error)


wildcard_constraints:
    model=MODEL_NAME,


def result_params(section):
    """A config section as a rule's params: without its bookkeeping keys (x-bookkeeping in
    config/schema.yaml: memory, GPUs, logging), which change how a job runs, not what it
    makes; the job's script reads those from the config at run time."""
    return result_settings(section, config[section])


# Each rule's params hold the hash of the repotune code its script runs (the script's import
# closure), so editing a module reruns exactly the stages that import it.
CODE = CodeHasher(workflow.basedir, cache_file=".snakemake/repotune/code-imports.json")


def code_of(rule):
    """The hash of the repotune modules scripts/<rule>.py imports (a params value)."""
    return CODE.hash(f"scripts/{rule}.py")


# Stages before the manifest, in order: the manifest hashes their outputs and reads their
# benchmark files.
STAGES = (
    "extract_commits",
    "curate",
    *(("snapshot",) if config["snapshot"]["enabled"] else ()),
    *(("fim_questions",) if config["evaluate"]["fim"]["enabled"] else ()),
    "tokenize",
    "train",
    "evaluate",
    "export",
)


def for_model(path, model):
    """A rule's output or benchmark pattern with {model} filled in (shared paths pass through)."""
    return expand(path, model=model)[0]


def resolved_head():
    """HEAD of the data repository; a params value, so extraction reruns when it moves."""
    try:
        head, warning = head_sha(config["repo"]), shallow_warning(config["repo"])
    except InputError as error:
        stop(error)
    if warning:
        print(f"repotune warning: {warning}", file=sys.stderr)
    return head


def get_final_output():
    """Everything `rule all` asks for, named by the rules that make it."""
    models = model_names()
    return [
        rules.extract_commits.output.stats,
        rules.curate.output.report,
        *([rules.snapshot.output.report] if config["snapshot"]["enabled"] else []),
        *expand(rules.train.output.adapter, model=models),
        *expand(rules.evaluate.output.json, model=models),
        rules.compare_models.output.table,
        *expand(rules.export.output.export, model=models),
        *expand(rules.manifest.output.manifest, model=models),
    ]


# -- models --
def model_names():
    """The resolved names of the configured models: the values of the {model} wildcard."""
    return list(MODELS)


def model_entry(wildcards):
    """The `models:` entry whose resolved name is the {model} wildcard (a params value)."""
    if wildcards.model not in MODELS:
        raise WorkflowError(f"model '{wildcards.model}' is not in config 'models'")
    return MODELS[wildcards.model][0]


def model_spec(wildcards):
    """The {model} entry resolved to a plain dict (a params value: a change reruns the rule)."""
    model_entry(wildcards)
    return asdict(MODELS[wildcards.model][1])


# -- GPUs --
@functools.cache
def visible_gpus():
    """GPUs nvidia-smi lists on the planning machine (0 without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, check=False
    )
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def train_gpus():
    """GPUs for training: train.num_gpus, or with -1 every visible GPU."""
    wanted = config["train"]["num_gpus"]
    return wanted if wanted >= 0 else visible_gpus()


def evaluate_gpus():
    """GPUs evaluate holds: 1 when it will run on CUDA (device auto or cuda and a GPU listed)."""
    if config["evaluate"]["device"] == "cpu":
        return 0
    return min(1, visible_gpus())


# -- evaluate --
def behaviour_tests_file():
    """The behavioural test YAML (an input, so editing it reruns evaluate): evaluate.behaviour.tests
    as given when it exists from the working directory, else from the workflow's directory
    (where the shipped default lives); None when the setting is null."""
    path = config["evaluate"]["behaviour"]["tests"]
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


def evaluate_inputs(wildcards):
    """What evaluate reads for {model}: the adapter and its base, tokenizer, test data."""
    model = wildcards.model
    inputs = {
        "adapter": for_model(rules.train.output.adapter, model),
        "base": for_model(rules.train.output.base, model),
        "tokenizer": for_model(rules.tokenize.output.tokenizer, model),
        "test_shards": for_model(rules.tokenize.output.test, model),
        "shard_stats": for_model(rules.tokenize.output.stats, model),
        "test_commits": rules.curate.output.test,
    }
    tests = behaviour_tests_file()
    if tests is not None:
        inputs["behaviour_tests"] = tests
    if config["evaluate"]["fim"]["enabled"]:
        inputs["fim_questions"] = rules.fim_questions.output.questions
    return inputs


def fim_question_settings():
    """What shapes the FIM questions (a params value): the sample size, the evaluation seed,
    the largest file asked about and the curate filters and redaction they reuse."""
    curate = config["curate"]
    return {
        "samples": config["evaluate"]["fim"]["samples"],
        "seed": config["evaluate"]["seed"],
        "max_file_bytes": config["snapshot"]["max_file_bytes"],
        "curate": {"filters": curate["filters"], "redact": curate["redact"]},
    }


# -- manifest --
def manifest_config(wildcards):
    """The resolved config with `models` narrowed to this model (a params value: adding a
    second model must not rerun the first one's manifest) and without bookkeeping keys
    (the script puts them back from the config, to record the whole config), its keys
    sorted: the order the config files were merged in must not rerun it either."""
    return canonical(result_config({**config, "models": [model_entry(wildcards)]}))


def manifest_inputs(wildcards):
    """Every output of every stage before the manifest, for {model}: the manifest hashes all
    of it. Keys are `<rule>_<output name>` (e.g. `extract_commits_stats`, `evaluate_json`);
    a model on the base pretrained here adds that base and its manifest.
    """
    inputs = {
        f"{stage}_{name}": for_model(path, wildcards.model)
        for stage in STAGES
        for name, path in getattr(rules, stage).output.items()
    }
    if uses_pretrained_base(wildcards.model):
        inputs |= {
            f"pretrain_base_{name}": path
            for name, path in rules.pretrain_base.output.items()
        }
    return inputs


def manifest_code():
    """Stage name -> the hash of the code it ran (recorded in the manifest)."""
    return {stage: code_of(stage) for stage in (*STAGES, "manifest")}


def manifest_benchmarks(wildcards):
    """Stage name -> the benchmark TSV with its wall time and peak memory."""
    return {
        stage: for_model(getattr(rules, stage).benchmark, wildcards.model)
        for stage in STAGES
    }


# -- snapshot helpers --
def snapshot_settings():
    """What shapes the snapshot (a params value): its section without the on/off switch, and
    the curate filters and redaction it reuses."""
    section = {
        key: value for key, value in config["snapshot"].items() if key != "enabled"
    }
    curate = config["curate"]
    return {
        "snapshot": section,
        "curate": {"filters": curate["filters"], "redact": curate["redact"]},
    }


def tokenize_input(wildcards):
    """The curated splits, and the snapshot's files when the training split gets file
    documents (tokenize.files with snapshot.enabled); otherwise tokenize does not wait for
    the snapshot. A model on the base pretrained here waits for that base (its tokenizer).
    """
    inputs = {
        "train": rules.curate.output.train,
        "validation": rules.curate.output.validation,
        "test": rules.curate.output.test,
    }
    if config["snapshot"]["enabled"] and config["tokenize"]["files"]:
        inputs["files"] = rules.snapshot.output.files
    return inputs | pretrained_base_input(wildcards)


# -- pretrain_base --
PRETRAINED_MANIFEST = os.path.join(os.path.dirname(PRETRAINED_BASE), MANIFEST)
# {stdlib} and {site_packages} of the interpreter that plans, also for a job run elsewhere.
PLACES = interpreter_places()


def pretrain_key(wildcards):
    """The cache key of the base (corpus listing and settings; a params value). Called only
    when the plan holds pretrain_base: listing the corpus stats every file."""
    try:
        settings = PretrainSettings.from_config(config["pretrain"], config["train"])
        return plan(settings, config["repo"], PLACES, BLOB_CACHE)[1]
    except InputError as error:
        stop(error)


def uses_pretrained_base(model):
    """Whether the model entry's base is the one pretrain_base builds."""
    return MODELS[model][1].base == PRETRAINED_BASE


def pretrained_base_input(wildcards):
    """{"pretrained": the base} for a model on the base pretrained here, else nothing."""
    if uses_pretrained_base(wildcards.model):
        return {"pretrained": rules.pretrain_base.output.model}
    return {}


# -- export --
def export_settings():
    """The export section, checked once at parse time (ollama needs gguf: one-line error)."""
    try:
        ExportSettings.from_config(config["export"])
    except InputError as error:
        stop(error)
    return config["export"]
