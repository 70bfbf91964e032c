"""Snakemake entry point of rule manifest; the logic is repotune.manifest.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from snakemake import __version__ as snakemake_version

from repotune.adapter_files import SUMMARY_FILE
from repotune.config import run_config
from repotune.logs import run_job
from repotune.manifest.stage import build_manifest, write_manifest

# The inputs are every output of the stages before this one (rules/common.smk,
# manifest_inputs), named <rule>_<output>; all of them are hashed.
run_job(
    snakemake.log[0],
    lambda: write_manifest(
        snakemake.output.manifest,
        build_manifest(
            model=snakemake.wildcards.model,
            config=run_config(snakemake.params.config, snakemake.config),
            roots=list(snakemake.input),
            benchmarks=dict(snakemake.params.benchmarks),
            code=dict(snakemake.params.code),
            training_summary=str(Path(snakemake.input.train_adapter) / SUMMARY_FILE),
            eval_report=snakemake.input.evaluate_json,
            commit_stats=snakemake.input.extract_commits_stats,
            workflow_dir=Path(snakemake.scriptdir).parent,
            snakemake_version=snakemake_version,
        ),
    ),
)
