"""Benchmark extract_commits against its floor and a common baseline, on one repository.

(a) raw ``git log -p`` with the same options as ours, output to /dev/null: git's own work,
    the floor;
(b) our extraction to Parquet (all cores, and one worker);
(c) PyDriller iterating the same commits and reading every file's diff (on the first
    ``--pydriller-commits`` commits: at its speed the whole history takes minutes).

It also runs our extraction on the first fifth of the history and on all of it, each in a
fresh process, and prints the peak memory of both: it should not grow with history length.

    .venv/bin/python -m benchmarks.extract                    # a 50k-commit synthetic repo
    .venv/bin/python -m benchmarks.extract --repo /path/to/repo
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_repo import build
from repotune.config import resolve_config
from repotune.extract.stage import ExtractSettings, extract_to_parquet, git_log_command

MEMORY_PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from repotune.config import resolve_config
from repotune.extract.stage import ExtractSettings, extract_to_parquet
settings = ExtractSettings.from_config(resolve_config()["extract"])
out = sys.argv[4]
extract_to_parquet(sys.argv[2], sys.argv[3], out + "/c.parquet", out + "/s.json",
                   out + "/cache.parquet", settings, threads=int(sys.argv[5]))
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"self_mb": own / 1024, "largest_child_mb": children / 1024}))
"""


def rev(repo: Path, name: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", name], capture_output=True, text=True, check=True
    ).stdout.strip()


def time_raw_git_log(repo: Path, head: str, settings: ExtractSettings) -> float:
    command = [
        arg
        for arg in git_log_command(repo, settings)
        if arg not in ("--no-walk=unsorted", "--stdin")
    ]
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run([*command, "--no-merges", head], stdout=sink, check=True)
    return time.perf_counter() - started


def time_ours(repo: Path, head: str, settings: ExtractSettings, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        return extract_to_parquet(
            repo,
            head,
            f"{out}/c.parquet",
            f"{out}/s.json",
            f"{out}/cache.parquet",
            settings,
            threads,
        )


def time_pydriller(repo: Path, limit: int) -> tuple[int, float]:
    from pydriller import Repository

    started = time.perf_counter()
    seen = 0
    for commit in Repository(str(repo), only_no_merge=True, order="reverse").traverse_commits():
        for change in commit.modified_files:
            _ = change.diff
        seen += 1
        if seen == limit:
            break
    return seen, time.perf_counter() - started


def peak_memory(repo: Path, head: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        root = str(Path(__file__).resolve().parents[1])
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, root, str(repo), head, out, str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repo", type=Path, help="repository to benchmark (default: synthetic)")
    parser.add_argument("--commits", type=int, default=50_000, help="size of the synthetic repo")
    parser.add_argument("--pydriller-commits", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args()

    repo = arguments.repo
    if repo is None:
        repo = Path(__file__).resolve().parent / "out" / f"synthetic-{arguments.commits}"
        if not (repo / ".git").exists():
            print(f"building {repo} ...", flush=True)
            build(repo, arguments.commits)
    head = rev(repo, "HEAD")
    settings = ExtractSettings.from_config(resolve_config()["extract"])
    count = int(
        subprocess.check_output(
            ["git", "-C", str(repo), "rev-list", "--count", "--no-merges", head]
        )
    )

    raw = time_raw_git_log(repo, head, settings)
    ours = time_ours(repo, head, settings, arguments.threads)
    single = time_ours(repo, head, settings, 1)
    seen, driller = time_pydriller(repo, arguments.pydriller_commits)

    rows = [
        ("raw git log -p > /dev/null", count, raw),
        (f"repotune extract ({ours['workers']} workers)", ours["commits"], ours["wall_seconds"]),
        ("repotune extract (1 worker)", single["commits"], single["wall_seconds"]),
        (f"PyDriller, first {seen} commits", seen, driller),
    ]
    print(f"\nrepository: {repo}  ({count} non-merge commits, {os.cpu_count()} cores)")
    print(f"{'method':40} {'commits':>8} {'seconds':>8} {'commits/s':>10}")
    for name, commits, seconds in rows:
        print(f"{name:40} {commits:8d} {seconds:8.2f} {commits / seconds:10.0f}")
    ours_rate = ours["commits"] / ours["wall_seconds"]
    print(f"\nours / raw git log time:      {ours['wall_seconds'] / raw:.2f}x  (goal <= 1.2x)")
    print(
        f"ours vs PyDriller commits/s:  {ours_rate / (seen / driller):.1f}x faster  (goal >= 10x)"
    )

    fifth = subprocess.check_output(
        [
            "git",
            "-C",
            str(repo),
            "rev-list",
            "--no-merges",
            f"--skip={count - count // 5}",
            "-n1",
            head,
        ],
        text=True,
    ).strip()
    small, large = (
        peak_memory(repo, fifth, arguments.threads),
        peak_memory(repo, head, arguments.threads),
    )
    print(
        f"peak memory, {count // 5} vs {count} commits: main process {small['self_mb']:.0f} MB vs "
        f"{large['self_mb']:.0f} MB; largest worker/git {small['largest_child_mb']:.0f} MB vs "
        f"{large['largest_child_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
