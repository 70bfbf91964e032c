"""Runs guard each other: a second run in one directory stops in one line, a killed run leaves
nothing to unlock, a job that outlives its killed run keeps the next one out, and the run that
goes on produces results that verify."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from repotune.errors import InputError
from repotune.runlock import hold_run_lock, job_lock_prefix, release_run_lock
from testdata.workflow import BIN, ROOT, snakemake, verify_command
from tests.run_fixtures import copy_run

HOLD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from repotune.runlock import hold_run_lock
hold_run_lock(sys.argv[2])
print("held", flush=True)
time.sleep(600)
"""


def holder(lock):
    """A separate process holding ``lock`` (started, and holding, when this returns)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ROOT), str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_holder_is_refused_in_one_line_naming_the_first(tmp_path):
    lock = tmp_path / ".snakemake" / "repotune.lock"
    first = holder(lock)
    try:
        with pytest.raises(InputError) as raised:
            hold_run_lock(lock)
        message = str(raised.value)
        assert "\n" not in message
        assert message.startswith(
            f"{tmp_path}: another repotune run, or a job it started, is using"
        )
        assert f"pid {first.pid} on " in message and "started 20" in message
    finally:
        first.kill()
        first.wait()


def test_a_killed_holder_leaves_nothing_to_unlock(tmp_path):
    lock = tmp_path / ".snakemake" / "repotune.lock"
    first = holder(lock)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert lock.exists()  # the file stays; the kernel released the lock with the process
    try:
        hold_run_lock(lock)
        hold_run_lock(lock)  # again in the holder: nothing happens
        assert f"pid {os.getpid()} on " in lock.read_text()
    finally:
        release_run_lock(lock)


def wait_for(path, timeout_s=120.0):
    """Poll until ``path`` exists (a job has started)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_job_keeps_the_lock_after_its_run_is_killed(tmp_path):
    """A job's shell, with the prefix Snakemake puts before each job, holds the lock shared:
    its command inherits it, and keeps it when the run that started it is killed."""
    lock = tmp_path / ".snakemake" / "repotune.lock"
    run = holder(lock)
    started = tmp_path / "started"
    job = subprocess.Popen(
        ["bash", "-c", f"{job_lock_prefix(lock)}touch {started}; sleep 60"],
        start_new_session=True,
    )
    try:
        wait_for(started)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        with pytest.raises(InputError, match=rf"or a job it started.*\(pid {run.pid} on "):
            hold_run_lock(lock)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    hold_run_lock(lock)  # the job has ended: nothing holds it any more
    release_run_lock(lock)


SLOW_RULE = """
include: "{root}/rules/runlock.smk"

rule slow:
    output:
        "done.txt",
    script:
        "slow.py"
"""
SLOW_SCRIPT = """
import pathlib, time
pathlib.Path("started").write_text("x")
time.sleep(20)
pathlib.Path(snakemake.output[0]).write_text("x")
"""


def test_a_job_outliving_its_killed_snakemake_keeps_the_next_run_out(tmp_path):
    """The workflow's own lock wiring (rules/runlock.smk) on a rule of this test: kill -9 the
    Snakemake process while its job runs; the job goes on (reparented), and a new run in the
    directory refuses in one line instead of rerunning the job over the same output."""
    (tmp_path / "Snakefile").write_text(SLOW_RULE.format(root=ROOT))
    (tmp_path / "slow.py").write_text(textwrap.dedent(SLOW_SCRIPT))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(tmp_path / "Snakefile"),
        "--directory", str(tmp_path), "--cores", "1", "--nolock",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(tmp_path / "started")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0
        errors = [line for line in second.stderr.splitlines() if line.startswith("repotune error:")]
        assert len(errors) == 1, second.stderr[-3000:]
        assert f"or a job it started, is using this directory (pid {first.pid} on " in errors[0]
        assert not (tmp_path / "done.txt").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):  # the orphaned job is in its group
            os.killpg(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # its processes are gone a moment after the signal
        try:
            hold_run_lock(tmp_path / ".snakemake" / "repotune.lock")
            break
        except InputError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    release_run_lock(tmp_path / ".snakemake" / "repotune.lock")


def start(workdir, config):
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(configfile), "--cores", "1",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_is_refused_before_it_reads_the_directory_and_a_dry_run_is_not(shared_run, tmp_path):
    """The lock is taken while the Snakefile is read: a second run stops before Snakemake builds
    its DAG, so it can never meet the first run's outputs half-replaced (a ProtectedOutputException
    on a directory the first run was rewriting); a dry run only reads, and goes ahead."""
    run = copy_run(shared_run, tmp_path)
    first = holder(run.workdir / ".snakemake" / "repotune.lock")
    try:
        config = {**run.config, "train": {**run.config["train"], "learning_rate": 0.01}}
        refused = start(run.workdir, config)
        _, err = refused.communicate(timeout=600)
        assert refused.returncode != 0
        errors = [line for line in err.splitlines() if line.startswith("repotune error:")]
        assert len(errors) == 1 and f"(pid {first.pid} on " in errors[0], err[-3000:]
        assert "Building DAG of jobs" not in err, err[-3000:]

        dry = snakemake(run.workdir, "--dry-run", config=run.config)
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_two_runs_started_together_one_refuses_the_other_verifies(shared_run, tmp_path):
    """On a copy of the session's finished run without its manifest: both runs find the
    manifest to make. The lock is taken while the Snakefile is read, so the winner holds it from
    then until its manifest job ends, long after the other run has read the Snakefile too; the
    refused run stops before building its DAG (a lock taken later lets both build it)."""
    run = copy_run(shared_run, tmp_path)
    workdir = run.workdir
    manifest = workdir / "results" / "tiny" / "manifest.json"
    manifest.unlink()
    config = run.config
    runs = [start(workdir, config), start(workdir, config)]
    outcomes = [(run.wait(timeout=1800), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, [err[-2000:] for _, _, err in outcomes]
    _, _, refused = next(outcome for outcome in outcomes if outcome[0] != 0)
    errors = [line for line in refused.splitlines() if line.startswith("repotune error:")]
    assert len(errors) == 1, refused[-3000:]
    # It names the first run by pid and start, or says it is just starting when the two
    # runs met before the first had written who it is.
    assert re.search(
        r"or a job it started, is using this directory \((pid |just starting)", errors[0]
    )
    assert "Traceback" not in refused
    assert "Building DAG of jobs" not in refused, refused[-3000:]

    check = subprocess.run(verify_command(manifest, workdir), cwd=ROOT, capture_output=True)
    assert check.returncode == 0, check.stdout

    # A dry run never takes the lock: planning beside a running workflow is fine.
    lock = workdir / ".snakemake" / "repotune.lock"
    other = holder(lock)
    try:
        dry = snakemake(workdir, "-n", config=config)
        assert dry.returncode == 0, dry.stderr[-2000:]
    finally:
        other.kill()
        other.wait()
