"""Benchmark Snakemake's no-op dry run: parsing the workflow, resolving HEAD and checking every
output's provenance when nothing is stale. The target is under 2 seconds on the default config.

    .venv/bin/python -m benchmarks.noop_dryrun               # the default config, here
    .venv/bin/python -m benchmarks.noop_dryrun --fixture     # a finished run on a fixture repo

Without ``--fixture`` the current directory must hold a finished default run (``make run``) for
the dry run to be a no-op; the script prints the jobs it plans, so a non-no-op is visible.
``--fixture`` first runs the workflow to completion on a six-commit repository (FAST config of
testdata/workflow.py), then times the dry runs there.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testdata.workflow import data_repository, fast_config, planned_jobs, snakemake  # noqa: E402  # noqa: E402

SNAKEMAKE = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2"]


def time_dry_runs(run: callable, repeats: int) -> tuple[list[float], dict[str, int]]:
    """Wall seconds of ``repeats`` dry runs (after one warm-up) and the jobs the last planned."""
    run()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return seconds, planned_jobs(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", action="store_true", help="time on a finished fixture run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.fixture:
        temporary = Path(tempfile.mkdtemp(prefix="noop-dryrun-"))
        repo = data_repository(temporary / "data")
        workdir = temporary / "work"
        workdir.mkdir()
        config = fast_config(repo)
        finished = snakemake(workdir, config=config)
        assert finished.returncode == 0, finished.stderr[-2000:]
        where = f"fixture run in {workdir}"

        def run() -> subprocess.CompletedProcess:
            return snakemake(workdir, "-n", config=config)
    else:
        where = f"default config in {Path.cwd()}"

        def run() -> subprocess.CompletedProcess:
            return subprocess.run([*SNAKEMAKE, "-n"], capture_output=True, text=True)

    seconds, jobs = time_dry_runs(run, args.repeats)
    print(f"snakemake -n, {where}")
    print(f"  planned jobs: {jobs or 'none (no-op)'}")
    print(
        f"  wall seconds over {args.repeats} runs: median {statistics.median(seconds):.2f}, "
        f"min {min(seconds):.2f}, max {max(seconds):.2f} (target < 2 s)"
    )


if __name__ == "__main__":
    main()
