# Helpers shared by every stage: config validation, the repository's HEAD, final targets.
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, workflow.basedir)

from repotune.errors import InputError  # noqa: E402
from repotune.repository import head_sha  # noqa: E402

validate(config, schema="../config/schema.yaml")


def resolved_head():
    """HEAD of the data repository; a params value, so extraction reruns when it moves."""
    try:
        return head_sha(config["repo"])
    except InputError as error:
        raise WorkflowError(str(error)) from None


def get_final_output():
    """Everything `rule all` asks for; each stage adds its outputs here."""
    return [
        "results/commits.parquet",
        "results/commits.stats.json",
    ]


# -- curate helpers --

# -- tokenize helpers --

# -- train helpers --
