"""The workflow driven through the snakemake command line, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.gitfixtures import GitRepo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, *args: str, config: dict | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` with an extra config file."""
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(config or {}))
    return subprocess.run(
        [
            str(BIN / "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(configfile),
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
    )


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The job table of a dry run (``rule  count`` lines between the dashes and ``total``)."""
    assert result.returncode == 0, result.stderr + result.stdout
    jobs: dict[str, int] = {}
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return jobs
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


# A small, fast run: a one-layer tiny model, short blocks, a few optimizer steps.
FAST = {
    "models": [{"preset": "tiny", "architecture": {"n_layer": 1, "n_head": 2, "n_embd": 32}}],
    "tokenize": {"seq_len": 64},
    "train": {"max_steps": 3, "batch_size": 2, "eval_interval": 0},
}
MODEL_STAGES = {
    "tokenize": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1
}  # fmt: skip
ALL_STAGES = {"all": 1, "extract_commits": 1, "curate": 1, **MODEL_STAGES}


@pytest.fixture
def project(tmp_path: Path) -> tuple[GitRepo, Path]:
    repo = GitRepo(tmp_path / "data")
    for number in range(6):
        body = "".join(f"def f{i}():\n    return {number * i}\n" for i in range(number + 2))
        repo.commit(f"Add module number {number}", {f"pkg/m{number}.py": body})
    workdir = tmp_path / "work"
    workdir.mkdir()
    return repo, workdir


@pytest.mark.slow
def test_dry_run_run_and_rerun_only_what_changed(project):
    repo, workdir = project
    config = {"repo": str(repo.path), **FAST}
    assert planned_jobs(snakemake(workdir, "-n", config=config)) == ALL_STAGES

    run = snakemake(workdir, config=config)
    assert run.returncode == 0, run.stderr
    table = pq.read_table(workdir / "results" / "commits.parquet")
    assert table.column("subject").to_pylist() == [f"Add module number {n}" for n in range(6)]
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["head"]) == (6, repo.head())
    for rule in ("extract_commits", "curate", "tokenize_tiny", "train_tiny"):
        assert (workdir / "logs" / f"{rule}.log").exists()
        assert (workdir / "benchmarks" / "out" / f"{rule}.tsv").exists()
    assert (workdir / "results" / "tiny" / "adapter" / "adapter_model.safetensors").exists()

    assert planned_jobs(snakemake(workdir, "-n", config=config)) == {}

    repo.commit("Add module number 6", {"pkg/m6.py": "VALUE = 6\n"})
    dry = snakemake(workdir, "-n", config=config)
    assert planned_jobs(dry) == ALL_STAGES
    assert "Params have changed" in dry.stdout + dry.stderr
    assert snakemake(workdir, config=config).returncode == 0
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["commits_extracted"], stats["incremental"]) == (7, 1, True)

    changed = {**config, "extract": {"max_patch_bytes": 4096}}
    assert planned_jobs(snakemake(workdir, "-n", config=changed)) == ALL_STAGES
    curate_only = {**config, "curate": {"recency_half_life_days": 30}}
    expected = {"all": 1, "curate": 1, **MODEL_STAGES}
    assert planned_jobs(snakemake(workdir, "-n", config=curate_only)) == expected
    train_only = {**config, "train": {**FAST["train"], "learning_rate": 0.01}}
    expected = {
        "all": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1
    }  # fmt: skip
    assert planned_jobs(snakemake(workdir, "-n", config=train_only)) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"repo": "/no/such/path"}, "config 'repo' = '/no/such/path': path does not exist"),
        ({"repo": "/"}, "is not a git repository"),
        ({"extract": {"max_patch_byte": 10}}, "'max_patch_byte' was unexpected"),
        ({"extract": {"workers": "two"}}, "'two' is not of type 'integer'"),
    ],
)
def test_bad_input_fails_in_one_line_with_no_output(project, config, expected):
    _, workdir = project
    result = snakemake(workdir, "-n", config=config)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_lint_and_format_are_clean():
    lint = subprocess.run(
        [str(BIN / "snakemake"), "--lint"], cwd=ROOT, capture_output=True, text=True
    )
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, lint.stdout
    files = [str(ROOT / "Snakefile"), *map(str, sorted((ROOT / "rules").glob("*.smk")))]
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", *files], capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stderr
