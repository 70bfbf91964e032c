"""A finished run to use: the workflow run on a fixture repository, as `make run` leaves it.

Built once per test module through the snakemake command line (tests/test_workflow.py's FAST
settings: a one-layer tiny model, a few steps), with the export formats on. The tests of the
``repotune`` command and of the export rule read it as a user's ``results/`` would be read.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

from testdata.gitrepo import GitRepo
from testdata.workflow import FAST, snakemake

MODEL = "tiny"
EXPORT_ALL = {"merged": True, "gguf": {"enabled": True, "dtype": "f32"}, "ollama": True}


@dataclass(frozen=True)
class Run:
    """A workflow directory holding ``results/`` and the repository it learnt from."""

    workdir: Path
    repo: GitRepo

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    @property
    def export(self) -> Path:
        return self.results / MODEL / "export"


def history(repo: GitRepo) -> None:
    """A small history in one style: modules added one commit at a time."""
    for number in range(6):
        body = "".join(f"def f{i}():\n    return {number * i}\n" for i in range(number + 2))
        repo.commit(f"Add module number {number}", {f"pkg/m{number}.py": body})


def finished_run(root: Path, export: dict | None = None) -> Run:
    """Run the whole workflow in ``root/work`` on a fixture repository in ``root/data``."""
    repo = GitRepo(root / "data")
    history(repo)
    workdir = root / "work"
    workdir.mkdir()
    config = {"repo": str(repo.path), **FAST, "export": export or EXPORT_ALL}
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return Run(workdir, repo)


def copy_run(run: Run, target: Path) -> Path:
    """A copy of the run's results (a test may break it without touching the others')."""
    copied = target / "results"
    shutil.copytree(run.results, copied)
    return copied
