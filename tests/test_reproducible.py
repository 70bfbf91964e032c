"""Two runs from scratch with the same config on CPU give byte-identical artifacts, except the
files the manifest marks volatile (they record wall time, throughput or free memory)."""

import json

import pytest

from testdata.workflow import data_repository, fast_config, snakemake


@pytest.mark.slow
def test_two_runs_from_scratch_have_identical_hashes(tmp_path):
    repo = data_repository(tmp_path / "data")
    manifests = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        run = snakemake(workdir, config=fast_config(repo))
        assert run.returncode == 0, run.stderr[-3000:]
        manifests.append(json.loads((workdir / "results/tiny/manifest.json").read_text()))

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
