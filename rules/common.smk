# Helpers shared by every stage: config validation, the repository's HEAD, final targets.
# Bad input stops the workflow with one line (sys.exit), never a traceback.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, workflow.basedir)

from repotune.config import resolve_config  # noqa: E402
from repotune.errors import InputError  # noqa: E402
from repotune.repository import head_sha  # noqa: E402


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
