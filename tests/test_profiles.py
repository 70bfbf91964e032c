"""profiles/default is read without being named; profiles/slurm plans GPU and CPU jobs."""

import re
import subprocess

import pytest

from testdata.workflow import BIN, ROOT, data_repository, fast_config, snakemake


def dry_run_resources(*args: str) -> tuple[str, dict[str, str]]:
    """The output of a forced dry run in the project root and each rule's resources line."""
    result = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--forceall", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    blocks = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", output, re.MULTILINE)
    resources = {}
    for rule, body in blocks:
        line = re.search(r"resources: (.*)", body)
        resources[rule] = line.group(1) if line else ""
    return output, resources


def test_default_profile_is_picked_up():
    output, resources = dry_run_resources()
    assert "Using workflow specific profile profiles/default" in output
    assert "mem_mb=2000" in resources["tokenize"]


def test_default_profile_runs_past_a_killed_runs_lock(tmp_path):
    """The lock files a SIGKILLed run leaves do not stop the next plain `snakemake` run: the
    profile's nolock (rerun-incomplete is exercised by tests/test_interrupt.py)."""
    workdir = tmp_path / "work"
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/commits.parquet\n")
    config = fast_config(data_repository(tmp_path / "data"))
    result = snakemake(workdir, "--until", "extract_commits", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "results" / "commits.parquet").is_file()


@pytest.mark.documented(".venv/bin/snakemake --workflow-profile profiles/slurm -n")
def test_slurm_profile_puts_training_on_a_gpu_partition():
    output, resources = dry_run_resources("--workflow-profile", "profiles/slurm")
    assert "profiles/slurm" in output
    assert "slurm_partition=gpu" in resources["train"] and "gres=gpu:1" in resources["train"]
    for light in ("extract_commits", "curate", "tokenize", "manifest"):
        assert "slurm_partition=cpu" in resources[light], light
        assert "gres" not in resources[light], light
