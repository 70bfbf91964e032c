"""The workflow end to end on a real SLURM cluster, through profiles/slurm, with a kill mid-train.

Run after ci/slurm/start-cluster.sh (``make test-slurm`` does both). It

1. builds a fixture git repository and a work directory;
2. copies profiles/slurm/config.yaml with only what this one-node cluster needs changed (see
   :func:`test_profile`): partitions, gres and everything else are submitted as written;
3. runs ``snakemake --workflow-profile <copy>`` on the tiny model, and once the train job has
   written a checkpoint, ``scancel``s it: the profile's ``retries`` must resubmit it and the
   trainer must resume from that checkpoint;
4. checks that every job of the plan went through ``sbatch`` (a SLURM job id in Snakemake's log
   and a SLURM log file for each), that train ran twice and resumed, and that
   ``python -m repotune.manifest.verify`` accepts the results.

Prints one JSON record (versions, checks, wall time, load) and exits non-zero when a check fails.

Run: .venv/bin/python ci/slurm/run_workflow.py [--work DIR] [--timeout 1800]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from testdata.gitrepo import GitRepo  # noqa: E402

BIN = Path(sys.executable).parent
# The tiny preset as shipped (4 layers of 256), short blocks, and steps enough that the train
# job is still running when its first checkpoints appear.
CONFIG: dict[str, Any] = {
    "models": ["tiny"],
    "tokenize": {"seq_len": 128},
    "train": {
        "max_steps": 120,
        "batch_size": 4,
        "max_epochs": 100,
        "eval_interval": 0,
        "checkpoint_interval": 10,
        "logging_steps": 10,
        "num_gpus": 0,
    },
    "curate": {"split": {"test_size": 4, "validation_size": 3}},
    "evaluate": {
        "commit_messages": {"samples": 3, "max_new_tokens": 12},
        "code_changes": {"samples": 3, "max_new_tokens": 12},
        "behaviour": {"max_new_tokens": 12},
        "examples": 2,
    },
}
RESUMED = re.compile(r"resuming from the checkpoint at step (\d+)")
SUBMITTED = re.compile(
    r"has been submitted with SLURM jobid (\d+) \(log: .*?/slurm_logs/rule_(\w+)/"
)


def fixture_repository(path: Path) -> GitRepo:
    """Forty commits, each adding one small module, so every split has commits."""
    repo = GitRepo(path)
    for number in range(40):
        body = "".join(
            f"def f{i}(x):\n    return x * {number + i}\n" for i in range(2 + number % 5)
        )

        repo.commit(f"Add module number {number} with its helpers", {f"pkg/m{number}.py": body})
    return repo


def node_limits() -> tuple[int, int]:
    """CPUs and memory (MB) of the one node, as slurmctld knows them."""
    line = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(line[0]), int(line[1])


def test_profile(target: Path) -> dict[str, Any]:
    """profiles/slurm/config.yaml with what a 2-core laptop-sized node needs changed.

    * ``mem_mb`` and ``cpus_per_task`` capped to the node's (SLURM rejects a job asking for more
      than any node has);
    * ``slurm-status-command: squeue``: no accounting database here, so ``sacct`` answers
      nothing (the plugin picks it whenever the binary is installed);
    * ``slurm-no-account``: no accounts to guess;
    * a 10 s first status check (40 s by default) to keep the run short.
    """
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    cpus, memory_mb = node_limits()
    sections = [profile["default-resources"], *profile.get("set-resources", {}).values()]
    for resources in sections:
        if "mem_mb" in resources:
            resources["mem_mb"] = min(int(resources["mem_mb"]), memory_mb // 2)
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(int(resources["cpus_per_task"]), cpus)
    profile["set-threads"] = {rule: min(n, cpus) for rule, n in profile["set-threads"].items()}
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-no-account": True,
            "slurm-init-seconds-before-status-checks": 10,
        }
    )
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def train_job_id() -> str | None:
    """The SLURM job id of a running train job, if there is one."""
    listing = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True
    ).stdout
    for line in listing.splitlines():
        job, _, comment = line.partition("|")
        if comment.startswith("rule_train"):
            return job
    return None


def kill_train_after_checkpoint(work: Path, snakemake: subprocess.Popen, timeout: float) -> dict:
    """Wait for the train job's first checkpoint, then scancel the job; what was killed."""
    state = work / "results" / "tiny" / "train_state" / "checkpoint" / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and snakemake.poll() is None:
        job = train_job_id()
        if job is not None and state.exists():
            step = json.loads(state.read_text())["step"]
            subprocess.run(["scancel", job], check=True)
            return {"slurm_job": job, "checkpoint_step": step}
        time.sleep(0.2)
    return {}


def versions() -> dict[str, str]:
    def output(*command: str) -> str:
        result = subprocess.run(command, capture_output=True, text=True)
        return (result.stdout or result.stderr).strip().splitlines()[0]

    plugin = "import importlib.metadata as m; print(m.version('snakemake-executor-plugin-slurm'))"
    return {
        "slurm": output("sinfo", "--version"),
        "munge": output("munged", "--version"),
        "snakemake": output(str(BIN / "snakemake"), "--version"),
        "snakemake-executor-plugin-slurm": output(str(BIN / "python"), "-c", plugin),
    }


def planned_jobs(work: Path, command: list[str]) -> dict[str, int]:
    """The dry run's job table: rule -> count."""
    result = subprocess.run([*command, "-n"], cwd=work, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"dry run failed:\n{output[-3000:]}")
    jobs = {}
    for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
        parts = line.split()
        if not parts or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="repotune-slurm-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = fixture_repository(work / "data")
    profile = test_profile(work / "profile")
    config = {"repo": str(repo.path), **CONFIG}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
        "--configfile", str(work / "config.yaml"), "--workflow-profile", str(work / "profile"),
    ]  # fmt: skip
    plan = planned_jobs(work, command)
    load_before = os.getloadavg()
    started = time.monotonic()
    with open(work / "snakemake.out", "w") as out:
        snakemake = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT)
        killed = kill_train_after_checkpoint(work, snakemake, args.timeout)
        try:
            left = args.timeout - (time.monotonic() - started)
            returncode = snakemake.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            snakemake.kill()
            returncode = -1
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    output = (work / "snakemake.out").read_text()
    checks = check_run(work, plan, output, killed, returncode)
    record = {
        "versions": versions(),
        "profile_changes": {
            key: value for key, value in profile.items() if key.startswith("slurm-")
        },
        "plan": plan,
        "killed": killed,
        "checks": checks,
        "passed": all(checks.values()),
        "snakemake_returncode": returncode,
        "wall_seconds": round(wall, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
        "work": str(work),
    }
    print(json.dumps(record, indent=2))
    if not record["passed"]:
        print(output[-4000:], file=sys.stderr)
    elif not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if record["passed"] else 1)


def check_run(
    work: Path, plan: dict[str, int], output: str, killed: dict, returncode: int
) -> dict[str, bool]:
    """What the run must show; each check by name."""
    # Snakemake's line for each sbatch: its job, the SLURM job id and the SLURM log, which lies
    # under rule_<name>/ (the plugin deletes the logs of jobs that succeeded).
    submitted = [(rule, slurm_job) for slurm_job, rule in SUBMITTED.findall(output)]
    local = {"all"}  # the target rule runs on the login node
    remote = {rule: count for rule, count in plan.items() if rule not in local}
    per_rule = {rule: [job for name, job in submitted if name == rule] for rule in remote}
    train_log = work / "logs" / "train_tiny.log"
    train_text = train_log.read_text() if train_log.exists() else ""
    resumed = [int(step) for step in RESUMED.findall(train_text)]
    verify = subprocess.run(
        [str(BIN / "python"), "-m", "repotune.manifest.verify",
         str(work / "results" / "tiny" / "manifest.json"), "--root", str(work)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    killed_job = killed.get("slurm_job")
    return {
        "workflow_succeeded": returncode == 0,
        # every job but the final target went through sbatch, train once more after the kill
        "every_job_submitted_with_sbatch": len(submitted) == sum(remote.values()) + 1
        and all(len(per_rule[rule]) >= count for rule, count in remote.items()),
        "train_killed_mid_run": bool(killed)
        and killed["checkpoint_step"] < CONFIG["train"]["max_steps"],
        "train_retried_after_scancel": per_rule["train"][:1] == [killed_job]
        and len(per_rule["train"]) == 2,
        "killed_job_log_kept": killed_job is not None
        and (
            work / ".snakemake" / "slurm_logs" / "rule_train" / "tiny" / f"{killed_job}.log"
        ).exists(),
        "train_resumed_from_checkpoint": bool(killed)
        and bool(resumed)
        and resumed[-1] >= killed["checkpoint_step"],
        "manifest_verifies": verify.returncode == 0,
    }


if __name__ == "__main__":
    main()
