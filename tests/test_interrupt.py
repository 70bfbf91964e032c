"""A workflow killed mid-job reruns to completion with a plain `snakemake`, no clean-up.

The run is SIGKILLed (its whole process group, as a power cut or the OOM killer would) once the
job's log file appears, i.e. while the job is running. The plain rerun relies on
profiles/default (rerun-incomplete, nolock) and on atomic outputs.
"""

import os
import signal
import subprocess
import time

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from testdata.workflow import (
    BIN,
    ROOT,
    data_repository,
    fast_config,
    planned_jobs,
    snakemake,
    verify_command,
)

pytestmark = pytest.mark.slow


def kill_during(workdir, config, log_name, timeout=300.0):
    """Start the workflow, SIGKILL its process group once ``logs/<log_name>`` exists."""
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    log = workdir / "logs" / log_name
    deadline = time.monotonic() + timeout
    while not log.exists():
        assert process.poll() is None, f"the run ended before {log_name} appeared"
        assert time.monotonic() < deadline, f"{log_name} never appeared"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("log_name", ["extract_commits.log", "tokenize_tiny.log", "train_tiny.log"])
def test_killed_run_finishes_on_a_plain_rerun(tmp_path, log_name):
    repo = data_repository(tmp_path / "data")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = fast_config(repo)
    kill_during(workdir, config, log_name)
    assert not (workdir / "results" / "tiny" / "manifest.json").exists()

    rerun = snakemake(workdir, config=config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert planned_jobs(snakemake(workdir, "-n", config=config)) == {}

    assert pq.read_table(workdir / "results" / "commits.parquet").num_rows == 6
    for split in ("train", "validation", "test"):
        rows = pq.read_table(workdir / "results" / "dataset" / f"{split}.parquet").num_rows
        assert rows == {"train": 4, "validation": 1, "test": 1}[split]  # 6 commits, 10% / 10%
        assert datasets.load_from_disk(str(workdir / "results" / "tiny" / "shards" / split))
    manifest = workdir / "results" / "tiny" / "manifest.json"
    check = subprocess.run(verify_command(manifest, workdir), cwd=ROOT, capture_output=True)
    assert check.returncode == 0, check.stdout
