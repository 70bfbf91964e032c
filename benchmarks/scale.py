"""Scale benchmark: extract -> curate -> tokenize at two history lengths, time and peak memory.

Builds one steady-state synthetic history (benchmarks/synthetic_repo.py, ``git fast-import``;
files never grow past ``--max-lines``, so later commits cost what early ones do) with a branch at
each size, then runs the three data stages on each size, every stage in a fresh process. Per
stage it records wall time, the peak RSS of the stage's own process (VmHWM) and of its largest
child (git, extraction workers; ``RUSAGE_CHILDREN``), and prints the large/small ratios: the
goal is peak RSS at the large size within 1.2x of the small one, and time growing linearly.

The baseline is the same code on the smaller history: flat memory means the ratio of peaks
stays near 1 while the ratio of commits is 10.

    .venv/bin/python -m benchmarks.scale --sizes 5000 50000            # a quick check
    nice .venv/bin/python -m benchmarks.scale --sizes 50000 500000 --repo /tmp/h500k \\
        --results scale.json                                           # BENCHMARKS.md's table

``--repo`` keeps the built history for another run; ``--results`` is written after every
stage (and merged with what it already holds), so a run stopped part-way still leaves its
figures.
"""

import argparse
import calendar
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_repo import build  # noqa: E402

STAGE_PROBE = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from repotune.logs import run_logged
from repotune.config import resolve_config
stage, repo, head, out = sys.argv[2:6]
config = resolve_config({"repo": repo})
data = out + "/dataset"
splits = {name: f"{data}/{name}.parquet" for name in ("train", "validation", "test")}

def extract():
    from repotune.extract.stage import ExtractSettings, extract_to_parquet
    settings = ExtractSettings.from_config(config["extract"])
    return extract_to_parquet(repo, head, out + "/commits.parquet", out + "/commits.stats.json",
                              out + "/cache/commits.parquet", settings, threads=2)

def curate():
    from repotune.curate.stage import CurateSettings, curate
    settings = CurateSettings.from_config(config["curate"])
    return curate(out + "/commits.parquet", splits, data + "/curation.json", settings)

def tokenize():
    from repotune.models import resolve_model
    from repotune.shards.stage import SPLITS, TokenizeSettings, tokenize_stage
    model = resolve_model(config["models"][0])
    return tokenize_stage(splits, out + "/tiny/tokenizer",
                          {s: f"{out}/tiny/shards/{s}" for s in SPLITS},
                          out + "/tiny/shards/stats.json",
                          TokenizeSettings.from_config(config["tokenize"]), model, threads=2)

result = run_logged(f"{out}/{stage}.log", {"extract": extract, "curate": curate,
                                            "tokenize": tokenize}[stage])
status = open("/proc/self/status").read()
own = int(status.split("VmHWM:")[1].split()[0]) // 1024
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
facts = {"extract": lambda r: {"commits": r["commits"]},
         "curate": lambda r: {"commits": r["kept_commits"]},
         "tokenize": lambda r: {"tokens": r["tokens"],
                                "bpe_sample": r["tokenizer"].get("bpe_sample")}}
print(json.dumps({"self_mb": own, "child_mb": child, **facts[stage](result)}))
"""
STAGES = ("extract", "curate", "tokenize")


def _peak_so_far(pid: int) -> int:
    """VmHWM (MB) of a running process: its peak RSS up to now."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def run_stage(
    stage: str, repo: Path, head: str, out: Path, code: Path = ROOT, deadline: float | None = None
) -> dict:
    """Run one stage of the repotune in ``code`` in a fresh process; wall time, peak memory.

    Past ``deadline`` (a ``time.time()``) the stage is stopped and reported as partial: its
    peak RSS so far and its last progress line (how far it got, at what rate).
    """
    started = time.perf_counter()
    command = [sys.executable, "-c", STAGE_PROBE, str(code), stage, str(repo), head, str(out)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        peak = 0
        while process.poll() is None:
            peak = max(peak, _peak_so_far(process.pid))
            if deadline is not None and time.time() > deadline:
                process.kill()
                process.wait()
                log = (out / f"{stage}.log").read_text(encoding="utf-8").splitlines()
                last = [line for line in log if "/s" in line]
                return {
                    "wall_s": round(time.perf_counter() - started, 1),
                    "self_mb": peak,
                    "child_mb": 0,
                    "partial": True,
                    "last_progress": last[-1] if last else None,
                }
            time.sleep(1)
        output = process.stdout.read() if process.stdout else ""
    if process.returncode:
        raise SystemExit(f"stage {stage} failed with status {process.returncode}")
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 1), **json.loads(output.splitlines()[-1])}


def baseline_code(ref: str, into: Path) -> Path:
    """The package and config of git ref ``ref`` of this project, unpacked into ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "repotune", "config"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def load() -> str:
    """The machine's load averages (it is shared: every figure goes with its load)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def history(repo: Path, sizes: list[int], max_lines: int) -> Path:
    """The synthetic repository with a branch ``at-N`` per size; built unless already there."""
    wanted = [f"at-{size}" for size in sizes]
    if (repo / "HEAD").exists() or (repo / ".git").exists():
        branches = subprocess.run(
            ["git", "-C", str(repo), "branch", "--format=%(refname:short)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if set(wanted) <= set(branches):
            print(f"reusing {repo} (branches {', '.join(wanted)})", flush=True)
            return repo
        raise SystemExit(f"{repo} exists without the branches {wanted}: remove it or pick another")
    started = time.perf_counter()
    build(repo, max(sizes), max_lines=max_lines, marks=tuple(sizes))
    print(f"built {max(sizes):,} commits in {time.perf_counter() - started:.1f} s (load {load()})")
    return repo


def table(results: dict[str, dict[str, dict]]) -> str:
    """The markdown table of the smallest and largest size measured, with any baseline."""
    sizes = sorted(results, key=int)
    small, large = sizes[0], sizes[-1]
    lines = [
        f"| stage | {int(small):,}: s | {int(small):,}: peak MB (child) | {int(large):,}: s "
        f"| {int(large):,}: peak MB (child) | time ratio | peak ratio (child) |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        if stage not in results[small] or stage not in results[large]:
            continue
        a, b = results[small][stage], results[large][stage]
        if b.get("partial"):
            lines.append(
                f"| {stage} | {a['wall_s']} | {a['self_mb']} ({a['child_mb']}) "
                f"| stopped after {b['wall_s']} s | {b['self_mb']} so far | - "
                f"| {b['self_mb'] / a['self_mb']:.2f}x so far |"
            )
            continue
        child = f"{b['child_mb'] / a['child_mb']:.2f}x" if a["child_mb"] else "-"
        lines.append(
            f"| {stage} | {a['wall_s']} | {a['self_mb']} ({a['child_mb']}) | {b['wall_s']} "
            f"| {b['self_mb']} ({b['child_mb']}) | {b['wall_s'] / a['wall_s']:.2f}x "
            f"| {b['self_mb'] / a['self_mb']:.2f}x ({child}) |"
        )
    lines.append(f"commits ratio {int(large) / int(small):.1f}x")
    for size in sizes:
        for stage, measured in results[size].items():
            if "@" in stage:
                lines.append(
                    f"baseline {stage} at {int(size):,} commits: {measured['wall_s']} s, "
                    f"peak {measured['self_mb']} MB (ours: {results[size]['tokenize']['self_mb']})"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--max-lines", type=int, default=60)
    parser.add_argument("--repo", type=Path, default=None, help="build (or reuse) the history here")
    parser.add_argument("--results", type=Path, default=None, help="JSON of results, merged")
    parser.add_argument(
        "--baseline",
        default=None,
        help="git ref whose tokenize runs on the smallest size's curated data too (e.g. main)",
    )
    parser.add_argument(
        "--stop-at",
        default=None,
        help="HH:MM (UTC): stop the running stage then and record it as partial",
    )
    args = parser.parse_args()
    deadline = None
    if args.stop_at:
        hour, minute = map(int, args.stop_at.split(":"))
        deadline = calendar.timegm((*time.gmtime()[:3], hour, minute, 0))
    results: dict[str, dict[str, dict]] = {}
    if args.results and args.results.exists():
        results = json.loads(args.results.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        repo = history(args.repo or work / "repo", args.sizes, args.max_lines)
        for size in sorted(args.sizes):
            if deadline is not None and time.time() > deadline:
                break
            head = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", f"at-{size}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            out = work / f"out-{size}"
            out.mkdir()
            results[str(size)] = {}
            stages = [(stage, ROOT) for stage in STAGES]
            if args.baseline and size == min(args.sizes):
                code = baseline_code(args.baseline, work / "baseline")
                stages.append((f"tokenize@{args.baseline}", code))
            for stage, code in stages:
                before = load()
                measured = run_stage(stage.split("@")[0], repo, head, out, code, deadline)
                measured["load"] = f"{before} -> {load()}"
                measured["finished"] = time.strftime("%H:%M:%S UTC", time.gmtime())
                results[str(size)][stage] = measured
                print(f"{size:,} commits, {stage}: {measured}", flush=True)
                if args.results:
                    args.results.write_text(json.dumps(results, indent=2) + "\n")
                if measured.get("partial"):
                    break
            shutil.rmtree(out)
    print()
    print(table(results))
    print(f"load now {load()}")


if __name__ == "__main__":
    main()
