"""The manifest: config, provenance, versions, artifacts with hashes, stage costs, metrics."""

import hashlib
import json
import logging
import os
import platform
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from repotune.config import resolve_config
from repotune.evaluate.report import assign_verdicts, metric_entry
from repotune.evaluate.significance import paired_means
from repotune.manifest.stage import (
    PACKAGES,
    VOLATILE,
    artifact_files,
    build_manifest,
    describe_artifact,
    describe_artifacts,
    git_state,
    headline_metrics,
    machine,
    model_facts,
    package_versions,
    read_benchmark,
    volatile_reason,
    write_manifest,
)
from repotune.manifest.verify import verify
from testdata.gitrepo import GitRepo
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
    unmeasured = {
        "n": None,
        "delta_interval": None,
        "role": None,
        "p": None,
        "p_adjusted": None,
        "verdict": None,
    }
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
        "code_change.exact_match",
        float(base.mean()),
        float(base.mean() + 0.2),
        40,
        paired_means(base, base + 0.2, seed=1),
    )
    unclear = metric_entry(
        "commit_message.subject_exact_match", 0.5, 0.5, 40, paired_means(base, base[::-1], seed=1)
    )
    unmeasured = metric_entry("behaviour.pass_rate", None, None, 0, None)
    metrics = assign_verdicts(
        {
            "code_change.exact_match": better,
            "commit_message.subject_exact_match": unclear,
            "behaviour.pass_rate": unmeasured,
        },
        "code_change.exact_match",
    )
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"model": "tiny", "metrics": metrics}))
    found = headline_metrics(json.loads(path.read_text()))
    rouge = found["metrics.code_change.exact_match"]
    assert rouge["n"] == 40
    assert rouge["delta_interval"] == better["interval"]["delta"]
    low, high = rouge["delta_interval"]
    assert 0 < low <= high and rouge["delta"] == pytest.approx(low)  # the same gain everywhere
    assert (rouge["role"], rouge["verdict"]) == ("primary", "better")
    assert rouge["p"] == rouge["p_adjusted"] < 0.05
    similarity = found["metrics.commit_message.subject_exact_match"]
    assert similarity["delta_interval"][0] < 0 < similarity["delta_interval"][1]
    assert similarity["verdict"] == "no clear difference" and similarity["role"] == "secondary"
    assert similarity["p_adjusted"] == similarity["p"] > 0.05  # the only secondary test
    assert found["metrics.behaviour.pass_rate"] == {
        "base": None,
        "adapted": None,
        "delta": None,
        "n": 0,
        "delta_interval": None,
        "role": "exploratory",
        "p": None,
        "p_adjusted": None,
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


def test_build_manifest_records_data_commit_costs_metrics_and_artifacts(tmp_path):
    data = GitRepo(tmp_path / "data")
    head = data.commit("Add app", {"app.py": "print(1)\n"})
    run_dir = tmp_path / "run"
    adapter = run_dir / "results" / "m" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / ".adapter_model.tmp-1").mkdir()  # an interrupted atomic write: not an artifact
    (adapter / ".adapter_model.tmp-1" / "x").write_bytes(b"half")
    (adapter / "training_summary.json").write_text(
        json.dumps({"trainable_params": 64, "steps": 3, "hardware": {"kind": "cuda"}})
    )
    (run_dir / "results" / "commits.stats.json").write_text('{"head": "abc", "commits": 12}')
    (run_dir / "train.tsv").write_text(BENCHMARK)
    report = {
        "ppl": {"base": 9.0, "adapted": 3.0, "delta": -6.0},
        "headline": ["ppl"],
        "primary_metric": "ppl",
    }
    (run_dir / "report.json").write_text(json.dumps(report))
    config = {"repo": str(data.path)}
    manifest = build_manifest(
        model="m",
        config=config,
        roots=["results/m/adapter", "results/commits.stats.json"],
        benchmarks={"train": "train.tsv", "export": "absent.tsv"},
        training_summary="results/m/adapter/training_summary.json",
        eval_report="report.json",
        workflow_dir=tmp_path,  # not a git work tree
        base=run_dir,
        snakemake_version="9.9.9",
        commit_stats="results/commits.stats.json",
        code={"train": "h1"},
    )
    assert manifest["model"] == "m" and manifest["config"] == config
    assert manifest["data"] == {
        "repo": str(data.path.resolve()),
        "head": head,
        "extracted_head": "abc",
        "commits": 12,
    }
    assert manifest["workflow"] == {"path": str(tmp_path.resolve()), "sha": None, "dirty": None}
    assert manifest["code"] == {"train": "h1"}
    assert manifest["training"]["trainable_params"] == 64
    assert manifest["training"]["steps"] == 3 and manifest["training"]["epochs"] is None
    assert manifest["reproducibility"]["device"] == "cuda"
    assert manifest["reproducibility"]["bit_identical"] is False
    assert manifest["reproducibility"]["note"].startswith("CUDA run")
    assert manifest["stages"]["train"]["wall_seconds"] == 12.5
    assert manifest["stages"]["export"] is None
    assert manifest["metrics"] == {
        "ppl": {
            "base": 9.0,
            "adapted": 3.0,
            "delta": -6.0,
            "n": None,
            "delta_interval": None,
            "role": None,
            "p": None,
            "p_adjusted": None,
            "verdict": None,
        }
    }
    assert manifest["primary_metric"] == "ppl"
    assert manifest["artifact_roots"] == ["results/commits.stats.json", "results/m/adapter"]
    paths = [entry["path"] for entry in manifest["artifacts"]]
    assert paths == [
        "results/commits.stats.json",
        "results/m/adapter/adapter_model.safetensors",
        "results/m/adapter/training_summary.json",
    ]
    weights = manifest["artifacts"][1]
    assert weights["bytes"] == 7 and "volatile" not in weights
    assert weights["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert manifest["artifacts"][0]["volatile"] == VOLATILE["results/commits.stats.json"]
    software = manifest["software"]
    assert software["snakemake"] is not None and software["numpy"] is not None
    assert software["python"] == platform.python_version()
    assert software["torch"] == torch.__version__
    assert software["cuda"] == torch.version.cuda
    assert manifest["hardware"]["cpu_count"] == os.cpu_count()
    assert manifest["hardware"]["memory_bytes"] > 0


def test_a_cpu_run_without_report_or_stats_is_bit_identical_and_has_no_metrics(tmp_path):
    data = GitRepo(tmp_path / "data")
    data.commit("Add app", {"app.py": "print(1)\n"})
    (data.path / "untracked.txt").write_text("x")
    (tmp_path / "summary.json").write_text("{}")
    manifest = build_manifest(
        model="m",
        config={"repo": str(data.path)},
        roots=["summary.json"],
        benchmarks={},
        training_summary="summary.json",
        eval_report="missing.json",
        workflow_dir=data.path,
        base=tmp_path,
    )
    assert manifest["reproducibility"]["device"] == "cpu"
    assert manifest["reproducibility"]["bit_identical"] is True
    assert manifest["metrics"] == {} and manifest["code"] == {}
    assert manifest["data"]["commits"] is None and manifest["data"]["extracted_head"] is None
    assert manifest["workflow"]["dirty"] is True


def test_benchmark_repeats_average_the_time_and_keep_the_largest_peak(tmp_path):
    path = tmp_path / "train.tsv"
    header, row = BENCHMARK.splitlines()
    second = row.replace("12.5", "13.5").replace("812.4", "900.0").replace("11.9", "12.9")
    path.write_text(f"{header}\n{row}\n{second}\n")
    result = read_benchmark(path)
    assert result["wall_seconds"] == 13.0 and result["peak_rss_mb"] == 900.0
    assert result["cpu_seconds"] == 12.4
    # A repeat too short to sample ("NA") is skipped, not the end of the file.
    path.write_text(f"{header}\n{row.replace('812.4', 'NA')}\n{second}\n")
    assert read_benchmark(path)["peak_rss_mb"] == 900.0
    path.write_text(header + "\n")
    assert read_benchmark(path) is None


def test_a_benchmark_without_a_column_or_any_sample_gives_none_for_it(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("s\tmax_rss\nNA\t5.0\n")
    assert read_benchmark(path) == {
        "benchmark": path.as_posix(),
        "wall_seconds": None,
        "peak_rss_mb": 5.0,
        "cpu_seconds": None,
    }


def test_written_manifest_is_indented_json_ending_in_a_newline(tmp_path):
    write_manifest(tmp_path / "manifest.json", {"model": "m", "artifacts": []})
    text = (tmp_path / "manifest.json").read_text()
    assert text == '{\n  "model": "m",\n  "artifacts": []\n}\n'


def test_an_empty_headline_keeps_every_metric_and_top_level_metrics_are_filtered_too():
    report = {
        "ppl": {"base": 9.0, "adapted": 3.0, "delta": -6.0},
        "message": {"bleu": {"base": 0.1, "adapted": 0.3, "delta": 0.2}},
    }
    assert list(headline_metrics({**report, "headline": []})) == ["ppl", "message.bleu"]
    assert list(headline_metrics({**report, "headline": ["bleu"]})) == ["message.bleu"]


def test_hashing_reports_progress_in_bytes_of_the_whole(tmp_path, caplog):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.bin").write_bytes(b"defg")
    with caplog.at_level(logging.INFO, logger="repotune.manifest.stage"):
        described = describe_artifacts(["a.bin", "b.bin"], tmp_path)
    assert [entry["bytes"] for entry in described] == [3, 4]
    [closing] = [r for r in caplog.records if r.name == "repotune.manifest.stage"][-1:]
    assert closing.getMessage().startswith("manifest: sha256: done, 7/7 bytes (100.0%)")


def test_host_and_versions_are_those_of_this_machine(monkeypatch):
    facts = machine()
    assert facts["platform"] == platform.platform() and facts["machine"] == platform.machine()
    assert facts["processor"] == (platform.processor() or None)
    assert facts["gpus"] == [] or torch.cuda.is_available()
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():  # Linux: the kernel's total, in kB
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        assert facts["memory_bytes"] == total_kb * 1024
    monkeypatch.setitem(PACKAGES, "absent", "no-such-distribution-repotune")
    versions = package_versions()
    assert versions["absent"] is None
    assert versions["python"] == platform.python_version()
    assert versions["cuda"] == torch.version.cuda
    if not torch.cuda.is_available():
        assert versions["cudnn"] is None


def test_git_state_of_a_subdirectory_is_its_repository(tmp_path):
    data = GitRepo(tmp_path / "data")
    head = data.commit("Add app", {"src/app.py": "print(1)\n"})
    state = git_state(data.path / "src")
    assert state == {"path": str((data.path / "src").resolve()), "sha": head, "dirty": False}


def test_every_training_fact_is_recorded_and_nothing_else(tmp_path, monkeypatch):
    facts = {
        "base_model": "tiny",
        "resolved_targets": ["c_attn"],
        "trainable_params": 64,
        "dtype": "float32",
        "quantization": None,
        "gradient_checkpointing": False,
        "micro_batch": 2,
        "accumulation": 4,
        "world_size": 1,
        "effective_batch": 8,
        "steps": 10,
        "epochs": 1.5,
        "hardware": {"kind": "cpu"},
    }
    assert model_facts({**facts, "tokens_per_s": 123.0}) == facts
    # A manifest is versioned and dated in UTC; Snakemake's version comes from the rule when
    # the manifest's environment does not have the package.
    (tmp_path / "summary.json").write_text(json.dumps(facts))
    monkeypatch.setitem(PACKAGES, "snakemake", "no-such-distribution-repotune")
    manifest = build_manifest(
        model="m",
        config={"repo": str(tmp_path)},
        roots=["summary.json"],
        benchmarks={},
        training_summary="summary.json",
        eval_report=None,
        workflow_dir=tmp_path,
        base=tmp_path,
        snakemake_version="9.9.9",
    )
    assert manifest["manifest_version"] == 1
    assert datetime.fromisoformat(manifest["created"]).utcoffset() == timedelta(0)
    assert manifest["software"]["snakemake"] == "9.9.9"
    assert manifest["reproducibility"]["volatile"] == VOLATILE
    assert manifest["training"] == facts


def test_an_installed_snakemake_is_not_overridden_and_roots_are_optional(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    arguments = {
        "model": "m",
        "config": {"repo": str(tmp_path)},
        "roots": ["summary.json"],
        "benchmarks": {},
        "training_summary": "summary.json",
        "eval_report": None,
        "workflow_dir": tmp_path,
        "base": tmp_path,
    }
    manifest = build_manifest(**arguments, snakemake_version="0.0.1")
    assert manifest["software"]["snakemake"] == package_versions()["snakemake"] != "0.0.1"
    without_roots = {"artifacts": manifest["artifacts"]}
    assert verify(without_roots, tmp_path) == []
