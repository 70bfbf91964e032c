"""Snakemake entry point of rule train; the logic is repotune.train (trainer, launch)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.config import run_settings
from repotune.logs import run_job
from repotune.train.launch import run_distributed
from repotune.train.trainer import TrainRequest, train

# The processes to launch: the GPUs this job holds (its resources, not a params value).
gpus = snakemake.resources.gpu
request = TrainRequest(
    model=snakemake.params.model,
    shards_dir=str(Path(snakemake.input.train).parent),
    tokenizer_dir=snakemake.input.tokenizer,
    adapter_dir=snakemake.output.adapter,
    base_dir=snakemake.output.base,
    state_dir=snakemake.params.state,
    # The params hold what shapes the adapter; bookkeeping (memory, GPUs, logging and
    # checkpoint intervals) comes from the config at run time, so changing it replans nothing.
    settings=run_settings("train", snakemake.params.settings, snakemake.config["train"]),
)
run_job(
    snakemake.log[0],
    lambda: run_distributed(request, gpus) if gpus > 1 else train(request),
)
