"""Benchmark Snakemake's no-op dry run: parsing the workflow, resolving HEAD and checking every
output's provenance when nothing is stale. The target is under 2 seconds on the default config.

    .venv/bin/python -m benchmarks.noop_dryrun               # the default config, here
    .venv/bin/python -m benchmarks.noop_dryrun --fixture     # a finished run on a fixture repo

Without ``--fixture`` the current directory must hold a finished default run (``make run``) for
the dry run to be a no-op; the script prints the jobs it plans, so a non-no-op is visible.
``--fixture`` first runs the workflow to completion on a six-commit repository (FAST config of
testdata/workflow.py), then times the dry runs there.

    .venv/bin/python -m benchmarks.noop_dryrun --fixture --baseline /tmp/base

``--baseline DIR`` (with ``--fixture``) also times another checkout of the workflow (e.g.
``git worktree add /tmp/base main``) on its own finished fixture run, alternating the two so a
loaded machine slows both alike, and prints the ratio. CPU seconds (user + system of the
snakemake process) are printed beside wall seconds: on a shared machine they move less.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testdata.workflow import data_repository, fast_config, planned_jobs, snakemake  # noqa: E402

SNAKEMAKE = [str(Path(sys.executable).parent / "snakemake"), "--cores", "2"]


def timed(run: Callable[[], subprocess.CompletedProcess]) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds (user + system of the child) of one dry run, and its plan."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, planned_jobs(result)


def finished_fixture(workflow: Path) -> Callable[[], subprocess.CompletedProcess]:
    """A fixture repository run to completion with ``workflow``'s Snakefile; returns its dry run."""
    temporary = Path(tempfile.mkdtemp(prefix="noop-dryrun-"))
    repo = data_repository(temporary / "data")
    workdir = temporary / "work"
    workdir.mkdir()
    config = fast_config(repo)
    snakefile = ("--snakefile", str(workflow / "Snakefile"))
    finished = snakemake(workdir, *snakefile, config=config)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return lambda: snakemake(workdir, *snakefile, "-n", config=config)


def report(name: str, walls: list[float], cpus: list[float], jobs: dict[str, int]) -> None:
    print(f"  {name}: planned jobs: {jobs or 'none (no-op)'}")
    print(
        f"    wall seconds over {len(walls)} runs: median {statistics.median(walls):.2f}, "
        f"min {min(walls):.2f}, max {max(walls):.2f} (target < 2 s); "
        f"CPU seconds median {statistics.median(cpus):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", action="store_true", help="time on a finished fixture run")
    parser.add_argument("--baseline", type=Path, help="another workflow checkout to compare")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.fixture:
        runs = {"repotune": finished_fixture(ROOT)}
        if args.baseline is not None:
            runs[f"baseline {args.baseline}"] = finished_fixture(args.baseline.resolve())
        print("snakemake -n on a finished fixture run")
    else:
        runs = {
            "repotune": lambda: subprocess.run([*SNAKEMAKE, "-n"], capture_output=True, text=True)
        }
        print(f"snakemake -n, default config in {Path.cwd()}")
    for run in runs.values():
        run()  # warm-up: file-system caches, the import cache of repotune.codehash
    times: dict[str, tuple[list[float], list[float], dict[str, int]]] = {
        name: ([], [], {}) for name in runs
    }
    for _ in range(args.repeats):
        for name, run in runs.items():
            wall, cpu, jobs = timed(run)
            times[name][0].append(wall)
            times[name][1].append(cpu)
            times[name][2].clear()
            times[name][2].update(jobs)
    for name, (walls, cpus, jobs) in times.items():
        report(name, walls, cpus, jobs)
    if len(times) == 2:
        (walls, cpus, _), (base_walls, base_cpus, _) = times.values()
        wall_ratio = statistics.median(walls) / statistics.median(base_walls)
        cpu_ratio = statistics.median(cpus) / statistics.median(base_cpus)
        print(f"  ratio repotune / baseline: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
