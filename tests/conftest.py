"""Fixtures shared across test modules."""

import os
import subprocess
from collections.abc import Iterator

import pytest

# Two pytest-xdist workers on two cores: each process computes on one thread (the subprocesses
# it starts, training included, inherit this). Two threads each oversubscribe the cores, and
# for the tiny models the tests train, torch's threads mostly wait for each other: the suite
# took 388 s with torch's default and 358 s with one thread (2026-12-07, CONTRIBUTING.md).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from testdata.workflow import ROOT, verify_command
from tests.run_fixtures import MODEL, Run, finished_run, session_run

LONGEST_FIRST = (
    "test_learnability.py",
    "test_liveness.py",
    "test_gpu_check.py",
    "test_interrupt.py",
    "test_reproducible.py",
    "test_user_commands.py",
)
"""The modules that take longest (a minute or more on 2 cores), longest first. pytest-xdist
hands out whole files in collection order (the Makefile turns its own reordering, by number of
tests, off): the longest start first, so the suite does not wait for one of them at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the modules of :data:`LONGEST_FIRST` to the front, each module's tests in order."""
    rank = {name: number for number, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def repotune_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private $REPOTUNE_HOME for the session (repotune.serve.state): no test reads the
    user's token or finds, or starts, a `repotune serve` of the user's. Subprocesses inherit
    it."""
    previous = os.environ.get("REPOTUNE_HOME")
    os.environ["REPOTUNE_HOME"] = str(tmp_path_factory.mktemp("repotune-home"))
    yield
    if previous is None:
        os.environ.pop("REPOTUNE_HOME", None)
    else:
        os.environ["REPOTUNE_HOME"] = previous


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Iterator[Run]:
    """The workflow run once for the whole session (tests/run_fixtures.py): a full run costs a
    minute, and most workflow tests only read one. Under pytest-xdist the first worker to ask
    builds it and the others read the same directory (run_fixtures.session_run). Tests read it
    and never change it; a test that changes a run works on a copy (run_fixtures.copy_run).
    At the end of each worker the run's manifest must still verify and its repository's HEAD
    be where it was when the run was built (the last worker to finish checks after every test
    of the session), so a test that broke the rule fails loudly instead of misleading the
    tests after it."""
    if worker_id == "master":
        run = finished_run(tmp_path_factory.mktemp("shared-run"))
        head = run.repo.head()
    else:
        run, head = session_run(tmp_path_factory.getbasetemp().parent / "shared-run")
    yield run
    manifest = run.results / MODEL / "manifest.json"
    check = subprocess.run(
        verify_command(manifest, run.workdir), cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, f"a test changed the shared run:\n{check.stdout}"
    assert run.repo.head() == head, "a test committed to the shared run's repository"
