"""Snakemake entry point of rule compare_models; the logic is repotune.evaluate.comparison."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.evaluate.comparison import compare
from repotune.logs import run_job

run_job(
    snakemake.log[0],
    lambda: compare(list(snakemake.input.reports), snakemake.output.table, snakemake.output.plot),
)
