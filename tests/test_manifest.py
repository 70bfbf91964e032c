"""The manifest: config, provenance, versions, artifacts with hashes, stage costs, metrics."""

import hashlib
import json
import subprocess

import numpy as np
import pytest

from repotune.config import resolve_config
from repotune.evaluate.report import metric_entry
from repotune.evaluate.significance import paired_means
from repotune.manifest.stage import (
    artifact_files,
    describe_artifact,
    headline_metrics,
    read_benchmark,
    volatile_reason,
)
from testdata.workflow import ROOT, snakemake, verify_command
from tests.run_fixtures import copy_run

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
    unmeasured = {"n": None, "delta_interval": None, "verdict": None}
    assert headline_metrics(report) == {
        "metrics.perplexity": {"base": 40.0, "adapted": 12.0, "delta": -28.0, **unmeasured},
        "metrics.message.bleu": {"base": 0.1, "adapted": 0.3, "delta": 0.2, **unmeasured},
    }
    assert list(headline_metrics({**report, "headline": ["bleu"]})) == ["metrics.message.bleu"]


def test_headline_metrics_carry_n_the_delta_interval_and_the_verdict(tmp_path):
    """A report.json written the way evaluate writes it (report.metric_entry with a paired
    bootstrap): each manifest metric keeps the items resampled, the delta's 95% interval and
    the verdict, so a reader of the manifest sees whether the change is real."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 40)
    better = metric_entry(
        "commit_message.rouge_l",
        float(base.mean()),
        float(base.mean() + 0.2),
        40,
        paired_means(base, base + 0.2, seed=1),
    )
    unclear = metric_entry(
        "code_change.edit_similarity", 0.5, 0.5, 40, paired_means(base, base[::-1], seed=1)
    )
    unmeasured = metric_entry("behaviour.pass_rate", None, None, 0, None)
    metrics = {
        "commit_message.rouge_l": better,
        "code_change.edit_similarity": unclear,
        "behaviour.pass_rate": unmeasured,
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"model": "tiny", "metrics": metrics}))
    found = headline_metrics(json.loads(path.read_text()))
    rouge = found["metrics.commit_message.rouge_l"]
    assert rouge["n"] == 40
    assert rouge["delta_interval"] == better["interval"]["delta"]
    low, high = rouge["delta_interval"]
    assert 0 < low <= rouge["delta"] <= high
    assert rouge["verdict"] == "better"
    similarity = found["metrics.code_change.edit_similarity"]
    assert similarity["delta_interval"][0] < 0 < similarity["delta_interval"][1]
    assert similarity["verdict"] == "no clear difference"
    assert found["metrics.behaviour.pass_rate"] == {
        "base": None,
        "adapted": None,
        "delta": None,
        "n": 0,
        "delta_interval": None,
        "verdict": unmeasured["verdict"],
    }


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


def test_files_over_a_mebibyte_are_hashed_whole(tmp_path):
    head = bytes(range(256)) * 4096  # exactly 1 MiB
    for tail in (b"first tail", b"other tail"):
        (tmp_path / "big.bin").write_bytes(head + tail * 200_000)
        entry = describe_artifact("big.bin", tmp_path)
        whole = (tmp_path / "big.bin").read_bytes()
        assert entry["bytes"] == len(whole) > 2 * 2**20
        assert entry["sha256"] == hashlib.sha256(whole).hexdigest()


@pytest.mark.slow
def test_manifest_hashes_exactly_the_outputs_of_every_stage_before_it(shared_run):
    """The expected list comes from Snakemake's own summary of the rules' outputs."""
    config, workdir = shared_run.config, shared_run.workdir
    summary = snakemake(workdir, "--summary", config=config)
    assert summary.returncode == 0, summary.stderr[-3000:]
    stages = {"extract_commits", "curate", "snapshot", "tokenize", "train", "evaluate", "export"}
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
def test_workflow_writes_a_complete_manifest_that_verifies(shared_run, tmp_path):
    run = copy_run(shared_run, tmp_path)  # a copy: the end of the test alters an artifact
    repo, config, workdir = run.repo, run.config, run.workdir
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
