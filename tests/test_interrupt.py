"""A workflow killed mid-job reruns to completion with a plain `snakemake`, no clean-up.

Each case works on a copy of the session's finished run (tests/run_fixtures.py): one stage's
outputs are removed and the stage run again, and its process group SIGKILLed (as a power cut
or the OOM killer would) once the job has a partial output on disk: the hidden temporary of an
atomic write, one of its outputs but not the last, or training's first checkpoint. The plain
rerun relies on profiles/default (rerun-incomplete, nolock) and on atomic outputs, and must
give the uninterrupted run's files byte for byte: the shared run's manifest verifies on the
copy, bar the files it marks volatile (wall times). Both runs make the stage's outputs alone:
the stages after it would rebuild the same files at a minute's cost.
"""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest
import yaml

from repotune.manifest.verify import load_manifest, verify
from testdata.workflow import BIN, CORES, ROOT, planned_jobs, snakemake
from tests.run_fixtures import MODEL, copy_run

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Cut:
    """Where to kill a job of ``rule``: once any ``partial`` glob matches in the work
    directory, none of which exists before the job writes it (``last``, the job's last
    output, is still missing then). Each of ``whole`` found after the kill must be complete:
    the uninterrupted run's, byte for byte (a file written in place would be cut short)."""

    rule: str
    targets: tuple[str, ...]  # the rule's outputs: removed, then what the killed run makes
    partial: tuple[str, ...]
    last: str
    whole: tuple[str, ...]
    forget: str | None = None  # what the job would reuse from the finished run: removed too


CUTS = {
    # The cache is removed so that the job extracts every commit into its temporary.
    "extract_commits": Cut(
        rule="extract_commits",
        targets=("results/commits.parquet", "results/commits.stats.json"),
        partial=(
            "results/cache/.commits.parquet.tmp-*/commits.parquet",
            "results/cache/commits.parquet",
            "results/commits.parquet",
        ),
        last="results/commits.stats.json",
        whole=("results/cache/commits.parquet", "results/commits.parquet"),
        forget="results/cache",
    ),
    # The tokenizer is written first, then a shard per split, then the stats.
    "tokenize": Cut(
        rule="tokenize",
        targets=tuple(
            f"results/{MODEL}/{path}"
            for path in (
                "tokenizer",
                "shards/train",
                "shards/validation",
                "shards/test",
                "shards/stats.json",
            )
        ),
        partial=(
            f"results/{MODEL}/.tokenizer.tmp-*/tokenizer",
            f"results/{MODEL}/tokenizer",
            f"results/{MODEL}/shards/.*.tmp-*/*",
        ),
        last=f"results/{MODEL}/shards/stats.json",
        whole=tuple(f"results/{MODEL}/{path}" for path in ("tokenizer", "shards/train")),
    ),
    # A checkpoint every step (a bookkeeping key: the copy stays up to date); the kill comes
    # after the first, and the rerun resumes from it.
    "train": Cut(
        rule="train",
        targets=(f"results/{MODEL}/adapter", f"results/{MODEL}/base"),
        partial=(f"results/{MODEL}/train_state/checkpoint/state.json",),
        last=f"results/{MODEL}/adapter",
        whole=(f"results/{MODEL}/base",),
        forget=f"results/{MODEL}/train_state",
    ),
}


def kill_during(workdir, config, cut):
    """Make ``cut.targets`` in ``workdir``; SIGKILL the run's process group at the cut."""
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(configfile), "--cores", CORES,
        *cut.targets,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not any(next(workdir.glob(pattern), None) for pattern in cut.partial):
        if process.poll() is not None:
            pytest.fail(f"the run ended before {cut.rule} left a partial output")
        assert time.monotonic() < deadline, f"{cut.rule} never left a partial output"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workdir / cut.last).exists(), f"killed after {cut.rule} had finished"


def files(path):
    """Relative path -> content of the file ``path`` or of each file under the directory
    ``path``, hidden ones (an atomic write's temporaries) left out."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    }


def remove(path):
    """Delete a file or a directory."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


@pytest.mark.parametrize("rule", CUTS)
def test_killed_run_finishes_on_a_plain_rerun(shared_run, tmp_path, rule):
    cut = CUTS[rule]
    run = copy_run(shared_run, tmp_path)
    workdir = run.workdir
    config = {**run.config, "train": {**run.config["train"], "checkpoint_interval": 1}}
    for path in (*cut.targets, *([cut.forget] if cut.forget else [])):
        remove(workdir / path)
    kill_during(workdir, config, cut)
    for path in cut.whole:
        if (workdir / path).exists():
            assert files(workdir / path) == files(shared_run.workdir / path), f"{path} is cut short"

    rerun = snakemake(workdir, *cut.targets, config=config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert planned_jobs(snakemake(workdir, "-n", *cut.targets, config=config)) == {}

    # The uninterrupted run's files, byte for byte (a volatile file records wall time).
    manifest = load_manifest(shared_run.results / MODEL / "manifest.json")
    volatile = {entry["path"] for entry in manifest["artifacts"] if "volatile" in entry}
    changes = verify(manifest, workdir)
    assert [str(c) for c in changes if c.kind != "changed" or c.path not in volatile] == []
    if rule == "train":
        log = (workdir / "logs" / f"train_{MODEL}.log").read_text()
        assert "resuming from the checkpoint at step 1" in log
