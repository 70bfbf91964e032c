"""Snakemake entry point of rule tokenize; the logic is repotune.shards.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.curate.table import SPLITS
from repotune.logs import run_job
from repotune.models import ModelSpec
from repotune.shards.stage import TokenizeSettings, tokenize_stage

model = ModelSpec(**snakemake.params.model)
run_job(
    snakemake.log[0],
    lambda: tokenize_stage(
        splits={split: snakemake.input[split] for split in SPLITS},
        tokenizer_dir=snakemake.output.tokenizer,
        shard_dirs={split: snakemake.output[split] for split in SPLITS},
        stats_path=snakemake.output.stats,
        settings=TokenizeSettings.for_model(snakemake.params.settings, model),
        model=model,
        threads=snakemake.threads,
        files=getattr(snakemake.input, "files", None),
        preview=snakemake.output.preview,
    ),
)
