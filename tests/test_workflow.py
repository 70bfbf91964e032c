"""The workflow driven through the snakemake command line, as a user runs it."""

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from testdata.gitrepo import GitRepo
from testdata.workflow import (
    BIN,
    FAST,
    ROOT,
    data_repository,
    planned_jobs,
    snakemake,
    snakemake_reading,
)
from tests.run_fixtures import blank_copy, copy_run

MODEL_STAGES = {
    "tokenize": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1
}  # fmt: skip
ALL_STAGES = {
    "all": 1, "extract_commits": 1, "curate": 1, "snapshot": 1, "fim_questions": 1, **MODEL_STAGES
}  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> tuple[GitRepo, Path]:
    repo = data_repository(tmp_path / "data")
    workdir = tmp_path / "work"
    workdir.mkdir()
    return repo, workdir


@pytest.mark.slow
def test_dry_run_run_and_rerun_only_what_changed(shared_run, tmp_path):
    """From scratch (the shared run's repository beside an empty directory), then the shared
    run as it finished, then a copy of it: changed settings, then a new commit, make it stale."""
    config = shared_run.config
    scratch = blank_copy(shared_run, tmp_path / "scratch")
    assert planned_jobs(snakemake(scratch.workdir, "-n", config=config)) == ALL_STAGES

    workdir = shared_run.workdir
    table = pq.read_table(workdir / "results" / "commits.parquet")
    assert table.column("subject").to_pylist() == [f"Add module number {n}" for n in range(6)]
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["head"]) == (6, shared_run.repo.head())
    for rule in ("extract_commits", "curate", "tokenize_tiny", "train_tiny"):
        assert (workdir / "logs" / f"{rule}.log").exists()
        assert (workdir / "benchmarks" / "out" / f"{rule}.tsv").exists()
    # A job ends its process at once (repotune.logs.run_job): its log still ends with its
    # last words.
    train_log = (workdir / "logs" / "train_tiny.log").read_text().splitlines()
    assert "adapter written to results/tiny/adapter" in train_log[-1]
    assert (workdir / "results" / "tiny" / "adapter" / "adapter_model.safetensors").exists()

    run = copy_run(shared_run, tmp_path / "copy")
    repo, workdir = run.repo, run.workdir
    assert planned_jobs(snakemake(workdir, "-n", config=config)) == {}

    changed = {**config, "extract": {"max_patch_bytes": 4096}}
    assert planned_jobs(snakemake(workdir, "-n", config=changed)) == ALL_STAGES
    curate_only = {**config, "curate": {"recency_half_life_days": 30}}
    expected = {"all": 1, "curate": 1, "snapshot": 1, "fim_questions": 1, **MODEL_STAGES}
    assert planned_jobs(snakemake(workdir, "-n", config=curate_only)) == expected
    train_only = {**config, "train": {**FAST["train"], "learning_rate": 0.01}}
    expected = {
        "all": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1
    }  # fmt: skip
    assert planned_jobs(snakemake(workdir, "-n", config=train_only)) == expected

    # A new commit: every stage is due. Extraction, run alone (the stages after it were just
    # planned; they redo their work whatever changed), reads only the new commit.
    repo.commit("Add module number 6", {"pkg/m6.py": "VALUE = 6\n"})
    dry = snakemake(workdir, "-n", config=config)
    assert planned_jobs(dry) == ALL_STAGES
    assert "Params have changed" in dry.stdout + dry.stderr
    extracted = ("results/commits.parquet", "results/commits.stats.json")
    assert snakemake(workdir, *extracted, config=config).returncode == 0
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["commits_extracted"], stats["incremental"]) == (7, 1, True)
    after = {rule: count for rule, count in ALL_STAGES.items() if rule != "extract_commits"}
    assert planned_jobs(snakemake(workdir, "-n", config=config)) == after


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"repo": "/no/such/path"}, "config 'repo' = '/no/such/path': path does not exist"),
        ({"repo": "/"}, "is not a git repository"),
        ({"extract": {"max_patch_byte": 10}}, "'max_patch_byte' was unexpected"),
        ({"extract": {"workers": "two"}}, "'two' is not of type 'integer'"),
        ({"models": [{"preset": "tiny", "train": {"lora_rank": 4}}]}, "'lora_rank' was unexpected"),
    ],
)
def test_bad_input_fails_in_one_line_with_no_output(project, config, expected):
    _, workdir = project
    result = snakemake(workdir, "-n", config=config)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_lint_and_format_are_clean(tmp_path):
    """Linted in a directory of its own: a lint holds the run lock there while it reads."""
    lint = snakemake_reading("--lint", tmp_path)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "rules").glob("*.smk")))]
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", *files], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr
