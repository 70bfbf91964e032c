"""profiles/default is read without being named; profiles/slurm plans GPU and CPU jobs."""

import re
import subprocess

import yaml

from testdata.workflow import BIN, ROOT


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


def test_default_profile_is_picked_up_and_survives_kills():
    output, resources = dry_run_resources()
    assert "Using workflow specific profile profiles/default" in output
    assert "mem_mb=2000" in resources["tokenize"]
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["rerun-incomplete"] is True and profile["nolock"] is True


def test_slurm_profile_puts_training_on_a_gpu_partition():
    output, resources = dry_run_resources("--workflow-profile", "profiles/slurm")
    assert "profiles/slurm" in output
    assert "slurm_partition=gpu" in resources["train"] and "gres=gpu:1" in resources["train"]
    for light in ("extract_commits", "curate", "tokenize", "manifest"):
        assert "slurm_partition=cpu" in resources[light], light
        assert "gres" not in resources[light], light
