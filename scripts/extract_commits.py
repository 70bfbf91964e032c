"""Snakemake entry point of rule extract_commits; the logic is repotune.extract.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.extract.stage import ExtractSettings, extract_to_parquet
from repotune.logs import run_job

run_job(
    snakemake.log[0],
    lambda: extract_to_parquet(
        repo=snakemake.params.repo,
        head=snakemake.params.head,
        output=snakemake.output.commits,
        stats_path=snakemake.output.stats,
        cache=snakemake.params.cache,
        settings=ExtractSettings.from_config(snakemake.params.settings),
        threads=snakemake.threads,
    ),
)
