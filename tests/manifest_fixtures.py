"""A fixture data repository and workflow runs shared by the manifest, rerun, interruption and
reproducibility tests (the FAST config and the snakemake helpers come from test_workflow)."""

import shutil
import sys
from pathlib import Path
from typing import Any

from tests.gitfixtures import GitRepo
from tests.test_workflow import FAST, ROOT


def data_repository(path: Path) -> GitRepo:
    """Six small Python commits, as in test_workflow."""
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
    return model_jobs(extract_commits=1, curate=1)


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
