"""Snakemake entry point of rule curate; the logic is repotune.curate.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.curate.stage import CurateSettings, curate
from repotune.logs import run_job

run_job(
    snakemake.log[0],
    lambda: curate(
        commits=snakemake.input.commits,
        outputs={
            "train": snakemake.output.train,
            "validation": snakemake.output.validation,
            "test": snakemake.output.test,
        },
        report=snakemake.output.report,
        settings=CurateSettings.from_config(snakemake.params.settings),
    ),
)
