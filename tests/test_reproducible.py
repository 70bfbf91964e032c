"""Two runs from scratch with the same config on CPU give byte-identical artifacts, except the
files the manifest marks volatile (they record wall time, throughput or free memory)."""

import json

import pytest

from testdata.workflow import snakemake
from tests.run_fixtures import blank_copy


@pytest.mark.slow
def test_two_runs_from_scratch_have_identical_hashes(shared_run, tmp_path):
    """The first run is the session's (tests/conftest.py); the second starts from scratch in a
    new directory, on a copy of the same repository, with the same config."""
    scratch = blank_copy(shared_run, tmp_path)
    run = snakemake(scratch.workdir, config=scratch.config)
    assert run.returncode == 0, run.stderr[-3000:]
    manifests = [
        json.loads((workdir / "results/tiny/manifest.json").read_text())
        for workdir in (shared_run.workdir, scratch.workdir)
    ]

    first, second = ({a["path"]: a for a in m["artifacts"]} for m in manifests)
    assert first.keys() == second.keys()
    differ = {path for path in first if first[path]["sha256"] != second[path]["sha256"]}
    volatile = {path for path, entry in first.items() if "volatile" in entry}
    assert differ <= volatile, f"not reproducible: {sorted(differ - volatile)}"
    stage_outputs = {
        "results/commits.parquet",
        "results/dataset/train.parquet",
        "results/snapshot/files.parquet",
        "results/tiny/tokenizer/tokenizer.json",
        "results/tiny/shards/train/data-00000-of-00001.arrow",
        "results/tiny/adapter/adapter_model.safetensors",
        "results/tiny/base/model.safetensors",
        "results/tiny/eval/generations.jsonl",
    }
    assert stage_outputs <= first.keys() - volatile  # every stage's result is compared
    assert manifests[0]["metrics"] == manifests[1]["metrics"]
    assert manifests[0]["reproducibility"]["bit_identical"] is True
