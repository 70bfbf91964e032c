"""Snakemake entry point of rule evaluate; the logic is repotune.evaluate.stage."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

import torch

from repotune.evaluate.stage import EvaluateRequest, evaluate
from repotune.logs import run_job

torch.set_num_threads(snakemake.threads)
request = EvaluateRequest(
    model=snakemake.wildcards.model,
    adapter_dir=snakemake.input.adapter,
    base_dir=snakemake.input.base,
    tokenizer_dir=snakemake.input.tokenizer,
    test_shards=snakemake.input.test_shards,
    shard_stats=snakemake.input.shard_stats,
    test_commits=snakemake.input.test_commits,
    behaviour_tests=snakemake.input.get("behaviour_tests"),
    report_json=snakemake.output.json,
    report_md=snakemake.output.report,
    generations=snakemake.output.generations,
    loss_plot=snakemake.output.loss_curves,
    metrics_plot=snakemake.output.metrics_plot,
    settings=snakemake.params.settings,
    redact=snakemake.params.redact,
    fim_questions=snakemake.input.get("fim_questions"),
)
run_job(snakemake.log[0], lambda: evaluate(request))
