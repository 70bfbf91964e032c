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


@pytest.fixture
def project(tmp_path: Path) -> tuple[GitRepo, Path]:
    repo = GitRepo(tmp_path / "data")
    for number in range(4):
        repo.commit(f"Add module {number}", {f"pkg/m{number}.py": f"VALUE = {number}\n"})
    workdir = tmp_path / "work"
    workdir.mkdir()
    return repo, workdir


@pytest.mark.slow
def test_dry_run_run_and_rerun_only_what_changed(project):
    repo, workdir = project
    config = {"repo": str(repo.path)}
    assert planned_jobs(snakemake(workdir, "-n", config=config)) == {
        "all": 1,
        "extract_commits": 1,
        "curate": 1,
    }

    run = snakemake(workdir, config=config)
    assert run.returncode == 0, run.stderr
    table = pq.read_table(workdir / "results" / "commits.parquet")
    assert table.column("subject").to_pylist() == [f"Add module {n}" for n in range(4)]
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["head"]) == (4, repo.head())
    assert (workdir / "logs" / "extract_commits.log").exists()
    assert (workdir / "benchmarks" / "out" / "extract_commits.tsv").exists()

    assert planned_jobs(snakemake(workdir, "-n", config=config)) == {}

    repo.commit("Add module 4", {"pkg/m4.py": "VALUE = 4\n"})
    dry = snakemake(workdir, "-n", config=config)
    assert planned_jobs(dry) == {"all": 1, "extract_commits": 1, "curate": 1}
    assert "params" in dry.stdout + dry.stderr
    assert snakemake(workdir, config=config).returncode == 0
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["commits_extracted"], stats["incremental"]) == (5, 1, True)

    changed = {**config, "extract": {"max_patch_bytes": 4096}}
    assert planned_jobs(snakemake(workdir, "-n", config=changed)) == {
        "all": 1,
        "extract_commits": 1,
        "curate": 1,
    }
    curate_only = {**config, "curate": {"recency_half_life_days": 30}}
    assert planned_jobs(snakemake(workdir, "-n", config=curate_only)) == {"all": 1, "curate": 1}


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
