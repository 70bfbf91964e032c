# Helpers shared by every stage: config validation, the repository's HEAD, final targets.
# Bad input stops the workflow with one line (sys.exit), never a traceback.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, workflow.basedir)

from repotune.config import resolve_config  # noqa: E402
from repotune.errors import InputError  # noqa: E402
from repotune.extract.repository import head_sha  # noqa: E402


def stop(error):
    """End the run with the one-line message of an InputError."""
    sys.exit(f"repotune error: {error}")


try:
    resolve_config(config)
    validate(config, schema="../config/schema.yaml")
except InputError as error:
    stop(error)


def resolved_head():
    """HEAD of the data repository; a params value, so extraction reruns when it moves."""
    try:
        return head_sha(config["repo"])
    except InputError as error:
        stop(error)


def get_final_output():
    """Everything `rule all` asks for; each stage adds its outputs here."""
    return [
        "results/commits.stats.json",
        "results/dataset/curation.json",
        *expand("results/{model}/adapter", model=model_names()),
        *expand("results/{model}/eval/report.json", model=model_names()),
        "results/comparison.md",
        *expand("results/{model}/manifest.json", model=model_names()),
        *export_targets(),
    ]


# -- model helpers --
from dataclasses import asdict  # noqa: E402

from repotune.models import resolve_model  # noqa: E402


def model_names():
    """The resolved names of the configured models: the values of the {model} wildcard."""
    try:
        return [resolve_model(entry).name for entry in config["models"]]
    except InputError as error:
        stop(error)


def model_entry(wildcards):
    """The `models:` entry whose resolved name is the {model} wildcard (a params value)."""
    for entry in config["models"]:
        if resolve_model(entry).name == wildcards.model:
            return entry
    raise WorkflowError(f"model '{wildcards.model}' is not in config 'models'")


def model_spec(wildcards):
    """The {model} entry resolved to a plain dict (a params value: a change reruns the rule)."""
    return asdict(resolve_model(model_entry(wildcards)))


# -- train helpers --
import shutil  # noqa: E402
import subprocess  # noqa: E402


def train_gpus():
    """GPUs for training: train.num_gpus, or with -1 the GPUs nvidia-smi lists."""
    wanted = config["train"]["num_gpus"]
    if wanted >= 0:
        return wanted
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, check=False
    )
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


# -- manifest helpers --
MANIFEST_SPLITS = ("train", "validation", "test")


def manifest_config(wildcards):
    """The resolved config with `models` narrowed to this model (a params value: adding a
    second model must not rerun the first one's manifest)."""
    return {**config, "models": [model_entry(wildcards)]}


def manifest_inputs(wildcards):
    """Everything one model's run produced, by stage: the manifest hashes all of it."""
    model = wildcards.model
    return {
        "commits": "results/commits.parquet",
        "commit_stats": "results/commits.stats.json",
        **{split: f"results/dataset/{split}.parquet" for split in MANIFEST_SPLITS},
        "curation": "results/dataset/curation.json",
        "tokenizer": f"results/{model}/tokenizer",
        **{
            f"shards_{split}": f"results/{model}/shards/{split}"
            for split in MANIFEST_SPLITS
        },
        "shard_stats": f"results/{model}/shards/stats.json",
        "adapter": f"results/{model}/adapter",
        "base": f"results/{model}/base",
        "report": f"results/{model}/eval/report.json",
        **export_manifest_inputs(wildcards),
    }


def manifest_roots(wildcards):
    """The artifact files and directories to hash (the inputs, plus the evaluation folder
    with its plots, whose names the manifest need not know)."""
    return sorted(
        [*manifest_inputs(wildcards).values(), f"results/{wildcards.model}/eval"]
    )


def manifest_benchmarks(wildcards):
    """Stage name -> the benchmark TSV with its wall time and peak memory."""
    model = wildcards.model
    return {
        "extract_commits": "benchmarks/out/extract_commits.tsv",
        "curate": "benchmarks/out/curate.tsv",
        "tokenize": f"benchmarks/out/tokenize_{model}.tsv",
        "train": f"benchmarks/out/train_{model}.tsv",
        "evaluate": f"benchmarks/out/evaluate_{model}.tsv",
        "export": f"benchmarks/out/export_{model}.tsv",
    }


# -- evaluate helpers --
import os  # noqa: E402


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
        "adapter": f"results/{model}/adapter",
        "base": f"results/{model}/base",
        "tokenizer": f"results/{model}/tokenizer",
        "test_shards": f"results/{model}/shards/test",
        "shard_stats": f"results/{model}/shards/stats.json",
        "test_commits": "results/dataset/test.parquet",
    }
    tests = behaviour_tests_file()
    if tests is not None:
        inputs["behaviour_tests"] = tests
    return inputs


def evaluate_gpus():
    """GPUs evaluate holds: 1 when it will run on CUDA (device auto or cuda and a GPU listed)."""
    if config["evaluate"]["device"] == "cpu" or shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, check=False
    )
    return int(any(line.startswith("GPU ") for line in listing.stdout.splitlines()))


# -- export helpers (issue 18) --
from repotune.export.stage import ExportSettings  # noqa: E402


def export_settings():
    """The export section, checked once at parse time (ollama needs gguf: one-line error)."""
    try:
        return ExportSettings.from_config(config["export"])
    except InputError as error:
        stop(error)


def export_targets():
    """Every model's export directory: `rule all` asks for them."""
    export_settings()
    return expand("results/{model}/export", model=model_names())


def export_manifest_inputs(wildcards):
    """What the manifest hashes of the export: the whole export directory."""
    return {"export": f"results/{wildcards.model}/export"}
