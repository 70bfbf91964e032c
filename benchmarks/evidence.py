"""Evidence benchmark: does the adapter complete *future* code of its repository better than
its base? The whole workflow on a synthetic history of a few thousand commits, then the
report's base-vs-adapted table: fill-in-the-middle exact match, edit similarity and parses
(n, 95% paired bootstrap interval, verdict), beside perplexity.

    nice .venv/bin/python -m benchmarks.evidence       # 3,000 commits, ~15 min on 2 cores
    .venv/bin/python -m benchmarks.evidence --commits 500 --steps 40   # a quick look

The history is benchmarks/synthetic_repo.py's (random but regular Python-like edits); the test
split is its newest 10% of commits, which neither tokenizer nor adapter saw. The model is the
default ``tiny`` preset (untrained base: the comparison shows what training on the repository
gives, not what fine-tuning a pretrained model gives). The run's settings are printed first;
``--workdir`` keeps the run (a rerun with the same settings plans nothing and just reports).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_repo import build  # noqa: E402
from repotune.evaluate.report import METRICS, format_delta, format_value  # noqa: E402
from testdata.workflow import snakemake  # noqa: E402

SHOWN = ("perplexity", "fim.exact_match", "fim.edit_similarity", "fim.parses")


def run_config(repo: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    """The workflow config of the evidence run: the tiny preset, a short training, a FIM
    sample big enough for verdicts, and no commit-message, code-change or behavioural
    questions (not what this benchmark reports; on a loaded 2-core machine each costs
    minutes)."""
    return {
        "repo": str(repo),
        "models": [{"preset": "tiny"}],
        "train": {
            "max_steps": arguments.steps,
            "batch_size": arguments.batch_size,
            "max_epochs": 10,
            "eval_interval": max(arguments.steps // 4, 1),
        },
        "evaluate": {
            "device": "cpu",
            "perplexity": {"max_blocks": 200},
            "commit_messages": {"samples": 0},
            "code_changes": {"samples": 0},
            "behaviour": {"tests": None},
            "fim": {"samples": arguments.fim_samples, "max_new_tokens": 48},
        },
    }


def table(report: dict[str, Any]) -> list[str]:
    """The report's rows for SHOWN, as Markdown."""
    lines = [
        "| metric | base | adapted | delta [95% interval] | n | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name in SHOWN:
        entry = report["metrics"].get(name)
        if entry is None:
            continue
        interval = entry.get("interval")
        n = f"{interval['n']} {entry['unit']}" if interval else str(entry["count"])
        lines.append(
            f"| {METRICS[name].title} | {format_value(name, entry['base'])} | "
            f"{format_value(name, entry['adapted'])} | {format_delta(name, entry)} | {n} | "
            f"{entry['verdict']} |"
        )
    return lines


def timed_workflow(workdir: Path, config: dict[str, Any], what: str) -> float:
    """Run the workflow to results/comparison.md in ``workdir`` with ``config``, printing the
    load before and after and the wall time (or that it had nothing to do); exits with the end
    of Snakemake's output when it fails. Returns the wall seconds."""
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average), {os.cpu_count()} CPUs")
    started = time.monotonic()
    result = snakemake(workdir, "results/comparison.md", config=config)
    seconds = time.monotonic() - started
    if result.returncode:
        sys.exit(f"the workflow failed on {what}:\n{result.stderr[-3000:]}")
    idle = "; nothing to do" if "Nothing to be done" in result.stderr + result.stdout else ""
    print(f"workflow: {seconds / 60:.1f} min{idle}, load after: {os.getloadavg()[0]:.2f}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=3000, help="synthetic history length")
    parser.add_argument("--steps", type=int, default=120, help="training steps (train.max_steps)")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per step")
    parser.add_argument("--fim-samples", type=int, default=100, help="FIM questions asked")
    parser.add_argument("--workdir", type=Path, help="keep the repository and the run here")
    arguments = parser.parse_args()
    root = arguments.workdir or Path(tempfile.mkdtemp(prefix="repotune-evidence-"))
    repo, workdir = root / "repo", root / "work"
    if not (repo / ".git").exists():
        build(repo, arguments.commits, files=120, seed=0)
    workdir.mkdir(parents=True, exist_ok=True)
    config = run_config(repo, arguments)
    print(f"history: {arguments.commits} synthetic commits in {repo}")
    print(f"settings: {json.dumps({k: v for k, v in config.items() if k != 'repo'})}")
    timed_workflow(workdir, config, "the synthetic history")
    report = json.loads((workdir / "results/tiny/eval/report.json").read_text())
    questions = json.loads((workdir / "results/fim/fim_questions.json").read_text())
    training = report["training"]
    print(
        f"training: {training['steps']} steps, {training['tokens']} tokens, final train loss "
        f"{training['final_train_loss']}, best validation loss {training['best_val_loss']}"
    )
    print(
        f"test split: {report['samples']['test_commits']} commits; FIM questions asked "
        f"{questions['asked']}, skipped {questions['skipped']}; FIM format: "
        f"{report['fim']['format'] or 'none (plain continuation of the prefix)'}"
    )
    print("\n".join(table(report)))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
