"""Driving the workflow as a user does, on a fixture repository: the ``snakemake`` command line
in a work directory, the plan of a dry run, the small FAST config, a copy of the workflow to
edit. Shared by the workflow, manifest, rerun, interruption and reproducibility tests and by
benchmarks/noop_dryrun.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from testdata.gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CORES = "1" if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else "2"
"""``--cores`` of a test's run: under pytest-xdist each worker has about one core, and a job on
two threads beside another worker's job only spins (the learnability run's training took 145
CPU-seconds on two threads against 47 on one, for the same adapter, byte for byte)."""


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
            CORES,
            *args,
        ],
        capture_output=True,
        text=True,
    )


def snakemake_reading(flag: str, workdir: Path) -> subprocess.CompletedProcess:
    """``snakemake <flag>`` (``--lint``, ``--rulegraph``) on the project, run in ``workdir``: such
    commands hold the run lock of their directory while they read, so each test gets its own."""
    return subprocess.run(
        [str(BIN / "snakemake"), flag, "--directory", str(workdir), "--config", f"repo={ROOT}"],
        cwd=ROOT,
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


def data_repository(path: Path) -> GitRepo:
    """Six small Python commits, each adding a module."""
    repo = GitRepo(path)
    for number in range(6):
        body = "".join(f"def f{i}():\n    return {number * i}\n" for i in range(number + 2))
        repo.commit(f"Add module number {number}", {f"pkg/m{number}.py": body})
    return repo


def fast_config(repo: GitRepo, **overrides: Any) -> dict[str, Any]:
    """The FAST config on ``repo``, with top-level keys replaced by ``overrides``."""
    return {"repo": str(repo.path), **FAST, **overrides}


def model_jobs(**extra: int) -> dict[str, int]:
    """Jobs that rebuild one model from its tokenizer on (and the comparison), plus ``extra``."""
    return {
        "all": 1,
        "tokenize": 1,
        "train": 1,
        "evaluate": 1,
        "compare_models": 1,
        "export": 1,
        "manifest": 1,
    } | extra


def all_jobs() -> dict[str, int]:
    """Every job of a one-model run from scratch."""
    return model_jobs(extract_commits=1, curate=1, snapshot=1, fim_questions=1)


def copy_workflow(target: Path) -> Path:
    """A copy of the workflow (mtimes kept, so nothing looks edited); returns its Snakefile."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", target / "Snakefile")
    for folder in ("rules", "scripts", "config", "envs", "repotune", "profiles"):
        shutil.copytree(
            ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return target / "Snakefile"


def verify_command(manifest: Path, root: Path) -> list[str]:
    """``python -m repotune.manifest.verify`` as a user types it (run with cwd=ROOT)."""
    return [sys.executable, "-m", "repotune.manifest.verify", str(manifest), "--root", str(root)]
