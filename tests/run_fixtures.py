"""A finished run to share: the workflow run on a fixture repository, as `make run` leaves it.

Built once per test session (tests/conftest.py's ``shared_run``; under pytest-xdist by the
first worker, :func:`session_run`) through the snakemake command
line with the FAST settings (a one-layer tiny model, a few steps), every export format on and
the behavioural tests named by an absolute path (a copied workflow then reads the same file).
The tests of the workflow, its reruns, the manifest, the export rule and the ``repotune``
command read it as a user's ``results/`` would be read. A test that changes a run works on a
copy: :func:`copy_run` (the whole run, up to date), :func:`blank_copy` (its repository and an
empty work directory) or :func:`copy_results`.

The config names the repository relative to the work directory (``../data``), so a copy of the
run directory has the very same config and Snakemake finds the copy up to date.
"""

import copy
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from testdata.gitrepo import GitRepo
from testdata.workflow import FAST, ROOT, data_repository, snakemake

MODEL = "tiny"
EXPORT_ALL = {"merged": True, "gguf": {"enabled": True, "dtype": "f32"}, "ollama": True}
BEHAVIOUR = {"behaviour": {"tests": str(ROOT / "config" / "behaviour_tests.yaml")}}
CONFIG = {"repo": "../data", **FAST, "export": EXPORT_ALL, "evaluate": BEHAVIOUR}


@dataclass(frozen=True)
class Run:
    """``root/data``, the repository a run learnt from, and ``root/work``, where it ran."""

    root: Path
    repo: GitRepo

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    @property
    def export(self) -> Path:
        return self.results / MODEL / "export"

    @property
    def config(self) -> dict[str, Any]:
        """The config the run was made with (a fresh copy: a test may change it)."""
        return copy.deepcopy(CONFIG)


def finished_run(root: Path) -> Run:
    """Run the whole workflow in ``root/work`` on a fixture repository in ``root/data``."""
    run = Run(root, data_repository(root / "data"))
    run.workdir.mkdir()
    result = snakemake(run.workdir, config=run.config)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def session_run(root: Path) -> tuple[Run, str]:
    """The finished run in ``root`` and its repository's HEAD when built, built by the first
    caller and read by the rest: the pytest-xdist workers of one session share ``root``'s parent,
    and a file lock there makes the others wait for the first (pytest-xdist's documented way to
    run a session fixture once). A failed build is recorded, so the other workers fail with its
    message instead of building again."""
    built, failed = root / "run.pickle", root / "failed.txt"
    with FileLock(root.with_name(root.name + ".lock")):
        if failed.exists():
            raise AssertionError(f"the shared run failed in another worker:\n{failed.read_text()}")
        if not built.exists():
            root.mkdir()
            try:
                run = finished_run(root)
            except Exception as error:
                failed.write_text(str(error))
                raise
            built.write_bytes(pickle.dumps((run, run.repo.head())))
        return pickle.loads(built.read_bytes())


def blank_copy(run: Run, root: Path) -> Run:
    """A copy of ``run``'s repository beside an empty work directory: the same config starts
    there from scratch."""
    shutil.copytree(run.repo.path, root / "data", symlinks=True)
    (root / "work").mkdir()
    return Run(root, moved(run.repo, root / "data"))


def copy_run(run: Run, root: Path) -> Run:
    """A copy of the whole run, modification times kept, so Snakemake sees it up to date; a
    test may commit to its repository, rerun or break it without touching the shared run."""
    shutil.copytree(run.root, root, symlinks=True, dirs_exist_ok=True)
    return Run(root, moved(run.repo, root / "data"))


def moved(repo: GitRepo, path: Path) -> GitRepo:
    """``repo``'s handle for its copy at ``path``, with the same clock: new commits there follow
    the copied ones as they would in the original."""
    handle = copy.copy(repo)
    handle.path = path
    return handle


def copy_results(run: Run, target: Path) -> Path:
    """A copy of the run's results alone (for a test that breaks a file in them)."""
    copied = target / "results"
    shutil.copytree(run.results, copied)
    return copied
