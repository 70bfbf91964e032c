"""Snakemake entry point of rule pretrain_base; the logic is repotune.pretrain.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.logs import run_job
from repotune.pretrain.corpus import BLOB_CACHE
from repotune.pretrain.settings import PretrainSettings
from repotune.pretrain.stage import PretrainRequest, pretrain

config = snakemake.config
request = PretrainRequest(
    settings=PretrainSettings.from_config(config["pretrain"], config["train"]),
    repo=config["repo"],
    places=snakemake.params.places,
    model_dir=snakemake.output.model,
    manifest=snakemake.output.manifest,
    cache_dir=config["pretrain"]["cache_dir"],
    blob_cache=BLOB_CACHE,
    planned_key=snakemake.params.key,
)
run_job(snakemake.log[0], lambda: pretrain(request))
