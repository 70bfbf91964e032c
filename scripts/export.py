"""Snakemake entry point of rule export; the logic is repotune.export.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import torch

from repotune.export.stage import ExportRequest, ExportSettings, export
from repotune.logs import run_job

torch.set_num_threads(snakemake.threads)
request = ExportRequest(
    model=snakemake.wildcards.model,
    adapter_dir=snakemake.input.adapter,
    tokenizer_dir=snakemake.input.tokenizer,
    shard_stats=snakemake.input.shard_stats,
    output_dir=snakemake.output.export,
    settings=ExportSettings.from_config(snakemake.params.settings),
)
run_job(snakemake.log[0], lambda: export(request))
