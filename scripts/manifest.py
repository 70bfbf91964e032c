"""Snakemake entry point of rule manifest; the logic is repotune.manifest.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from snakemake import __version__ as snakemake_version

from repotune.logs import run_logged
from repotune.manifest.stage import build_manifest, write_manifest

run_logged(
    snakemake.log[0],
    lambda: write_manifest(
        snakemake.output.manifest,
        build_manifest(
            model=snakemake.wildcards.model,
            config=snakemake.params.config,
            roots=list(snakemake.params.roots),
            benchmarks=dict(snakemake.params.benchmarks),
            training_summary=snakemake.params.training_summary,
            eval_report=snakemake.params.eval_report,
            workflow_dir=Path(snakemake.scriptdir).parent,
            snakemake_version=snakemake_version,
        ),
    ),
)
