"""The manifest: config, provenance, versions, artifacts with hashes, stage costs, metrics."""

import hashlib
import json
import subprocess

import pytest

from repotune.config import resolve_config
from repotune.manifest.stage import (
    artifact_files,
    describe_artifact,
    headline_metrics,
    read_benchmark,
    volatile_reason,
)
from testdata.workflow import ROOT, data_repository, fast_config, snakemake, verify_command

BENCHMARK = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "12.5\t0:00:12\t812.4\t900.1\t700.0\t710.0\t1.0\t2.0\t95.0\t11.9\n"
)


def test_benchmark_file_gives_wall_time_and_peak_memory(tmp_path):
    path = tmp_path / "train_tiny.tsv"
    path.write_text(BENCHMARK)
    assert read_benchmark(path) == {
        "benchmark": path.as_posix(),
        "wall_seconds": 12.5,
        "peak_rss_mb": 812.4,
        "cpu_seconds": 11.9,
    }
    path.write_text(BENCHMARK.splitlines()[0] + "\n0.2\t0:00:00\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    assert read_benchmark(path)["peak_rss_mb"] is None
    assert read_benchmark(tmp_path / "absent.tsv") is None


def test_headline_metrics_are_found_anywhere_and_filtered_by_headline():
    report = {
        "metrics": {
            "perplexity": {"base": 40.0, "adapted": 12.0, "delta": -28.0},
            "message": {"bleu": {"base": 0.1, "adapted": 0.3, "delta": 0.2}},
        },
        "samples": [{"base": "x"}],
    }
    assert headline_metrics(report) == {
        "metrics.perplexity": {"base": 40.0, "adapted": 12.0, "delta": -28.0},
        "metrics.message.bleu": {"base": 0.1, "adapted": 0.3, "delta": 0.2},
    }
    assert list(headline_metrics({**report, "headline": ["bleu"]})) == ["metrics.message.bleu"]


@pytest.mark.parametrize(
    ("path", "volatile"),
    [
        ("results/commits.stats.json", True),
        ("results/tiny/shards/stats.json", True),
        ("results/tiny/adapter/training_summary.json", True),
        ("results/tiny/adapter/training_log.csv", True),
        ("results/commits.parquet", False),
        ("results/tiny/adapter/adapter_model.safetensors", False),
        ("results/tiny/shards/train/data-00000-of-00001.arrow", False),
    ],
)
def test_only_files_recording_wall_time_are_volatile(path, volatile):
    assert (volatile_reason(path) is not None) == volatile


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A fixture repository, its FAST config and a work directory where the run completed."""
    root = tmp_path_factory.mktemp("manifest")
    repo = data_repository(root / "data")
    workdir = root / "work"
    workdir.mkdir()
    config = fast_config(repo)
    run = snakemake(workdir, config=config)
    assert run.returncode == 0, run.stderr[-3000:]
    return repo, config, workdir


def test_files_over_a_mebibyte_are_hashed_whole(tmp_path):
    head = bytes(range(256)) * 4096  # exactly 1 MiB
    for tail in (b"first tail", b"other tail"):
        (tmp_path / "big.bin").write_bytes(head + tail * 200_000)
        entry = describe_artifact("big.bin", tmp_path)
        whole = (tmp_path / "big.bin").read_bytes()
        assert entry["bytes"] == len(whole) > 2 * 2**20
        assert entry["sha256"] == hashlib.sha256(whole).hexdigest()


@pytest.mark.slow
def test_manifest_hashes_exactly_the_outputs_of_every_stage_before_it(finished_run):
    """The expected list comes from Snakemake's own summary of the rules' outputs."""
    _, config, workdir = finished_run
    summary = snakemake(workdir, "--summary", config=config)
    assert summary.returncode == 0, summary.stderr[-3000:]
    stages = {
        "extract_commits", "curate", "snapshot", "fim_questions", "tokenize", "train", "evaluate",
        "export",
    }  # fmt: skip
    outputs = [
        line.split("\t")[0]
        for line in summary.stdout.splitlines()[1:]
        if line.count("\t") >= 2 and line.split("\t")[2] in stages
    ]
    assert {"results/commits.stats.json", "results/dataset/test.parquet"} <= set(outputs)
    manifest = json.loads((workdir / "results" / "tiny" / "manifest.json").read_text())
    assert sorted(manifest["artifact_roots"]) == sorted(outputs)
    assert [entry["path"] for entry in manifest["artifacts"]] == artifact_files(outputs, workdir)


@pytest.mark.slow
def test_workflow_writes_a_complete_manifest_that_verifies(finished_run):
    repo, config, workdir = finished_run
    manifest = json.loads((workdir / "results" / "tiny" / "manifest.json").read_text())

    assert manifest["config"] == resolve_config(config)
    assert manifest["data"]["head"] == manifest["data"]["extracted_head"] == repo.head()
    assert manifest["workflow"]["sha"] is not None and manifest["workflow"]["dirty"] in (
        True,
        False,
    )
    for package in ("python", "torch", "transformers", "peft", "bitsandbytes", "datasets",
                    "pyarrow", "gitpython", "snakemake"):  # fmt: skip
        assert manifest["software"][package], package
    assert "cuda" in manifest["software"] and manifest["hardware"]["cpu_count"] >= 1
    summary = json.loads((workdir / "results/tiny/adapter/training_summary.json").read_text())
    assert manifest["training"]["resolved_targets"] == summary["resolved_targets"]
    assert manifest["training"]["trainable_params"] == summary["trainable_params"] > 0
    assert manifest["reproducibility"]["bit_identical"] is True

    for stage in ("extract_commits", "curate", "tokenize", "train", "evaluate"):
        assert manifest["stages"][stage]["wall_seconds"] > 0, stage
    paths = {entry["path"]: entry for entry in manifest["artifacts"]}
    for expected in (
        "results/commits.parquet",
        "results/dataset/train.parquet",
        "results/dataset/curation.json",
        "results/tiny/tokenizer/tokenizer.json",
        "results/tiny/shards/stats.json",
        "results/tiny/adapter/adapter_model.safetensors",
        "results/tiny/adapter/training_summary.json",
        "results/tiny/base/base.json",
    ):
        assert expected in paths, expected
    assert any(path.startswith("results/tiny/shards/train/") for path in paths)
    shard = paths["results/tiny/adapter/adapter_model.safetensors"]
    data = (workdir / shard["path"]).read_bytes()
    assert (shard["bytes"], shard["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    for plot in ("report.json", "report.md", "loss_curves.png", "metrics.png"):
        assert f"results/tiny/eval/{plot}" in paths, plot
    assert manifest["stages"]["evaluate"]["wall_seconds"] > 0
    assert manifest["metrics"], "no base/adapted/delta metrics found in the eval report"

    check = verify_command(workdir / "results/tiny/manifest.json", workdir)
    assert subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0
    (workdir / "results" / "tiny" / "tokenizer" / "tokenizer.json").write_text("{}")
    altered = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert altered.returncode == 1
    assert "changed  results/tiny/tokenizer/tokenizer.json" in altered.stdout
