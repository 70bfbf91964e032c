"""Snakemake entry point of rule snapshot; the logic is repotune.snapshot.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.logs import run_job
from repotune.snapshot.stage import SnapshotSettings, snapshot

run_job(
    snakemake.log[0],
    lambda: snapshot(
        repo=snakemake.params.repo,
        train=snakemake.input.train,
        output=snakemake.output.files,
        report=snakemake.output.report,
        settings=SnapshotSettings.from_config(snakemake.params.settings),
    ),
)
