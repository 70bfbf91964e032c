"""`repotune suggest` latency on a finished run, against evaluation's generate on the same prompt.

Measured on the run in ``--results`` (default: a fresh workflow run of the default tiny preset on
a fixture repository, a few training steps): the staged change of a fixture repository with
one edited module. Reported:

* **process**: ``python -m repotune suggest`` wall time, imports and model loading included
  (what a user and the commit hook wait for);
* **load**: loading base + adapter and tokenizer in-process (repotune.cli.run.load), the
  libraries already imported;
* **suggest**: one greedy suggestion in-process (parse the staged change, filters, prompt ids,
  decode): the project;
* **baseline**: repotune.inference.decoding.generate on the same prompt
  (repotune.inference.prompts.commit_message_prompt, the same budget and stop strings): what
  evaluation does for one commit.

The ratio is suggest / baseline (1.0 = no overhead over evaluation's generation). The machine is
shared, so each in-process side runs ``--rounds`` times, alternating, and the fastest counts.

Run: .venv/bin/python -m benchmarks.suggest [--results DIR] [--rounds 5]
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from repotune.cli.diff import staged_files  # noqa: E402
from repotune.cli.run import find_run, load  # noqa: E402
from repotune.cli.suggest import change_commit, suggestions  # noqa: E402
from repotune.inference.budget import budget, context_length  # noqa: E402
from repotune.inference.decoding import Decoding, GenerationSettings, generate  # noqa: E402
from repotune.inference.prompts import commit_message_prompt, prompt_encoder  # noqa: E402
from repotune.modeling import load_adapted  # noqa: E402, F401  (imported here: load times loading)
from testdata.gitrepo import GitRepo  # noqa: E402
from testdata.workflow import FAST, snakemake  # noqa: E402

NEW_TOKENS = 64


def default_run(root: Path, merged: bool = False) -> Path:
    """The default tiny preset trained for a few steps on a fixture history; ``merged``: and
    exported as a merged model (export.merged)."""
    repo = GitRepo(root / "data")
    for number in range(12):
        body = "".join(f"def f{i}(x):\n    return x * {number + i}\n" for i in range(number + 3))
        repo.commit(f"Add module number {number}", {f"pkg/m{number}.py": body})
    workdir = root / "work"
    workdir.mkdir()
    config = {"repo": str(repo.path), "models": ["tiny"], "train": FAST["train"]}
    targets = ["results/tiny/adapter", "results/dataset/curation.json"]
    if merged:
        config["export"] = {"merged": True}
        targets.append("results/tiny/export")
    result = snakemake(workdir, *targets, config=config)
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir / "results"


def staged_change(root: Path) -> GitRepo:
    repo = GitRepo(root / "change")
    repo.commit(
        "Start", {"pkg/app.py": "".join(f"def f{i}():\n    return {i}\n" for i in range(30))}
    )
    repo.write("pkg/app.py", "".join(f"def f{i}():\n    return {i * 2}\n" for i in range(30)))
    repo.git("add", "-A")
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, help="a finished run (default: build one)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        results = args.results.resolve() if args.results else default_run(root)
        repo = staged_change(root)
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-m", "repotune", "suggest", "--results", str(results),
             "--device", "cpu"],
            cwd=repo.path, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        process_seconds = time.perf_counter() - started
        assert process.returncode == 0, process.stderr
        finished = find_run(results, None)
        started = time.perf_counter()
        loaded = load(finished, "cpu")
        load_seconds = time.perf_counter() - started
        decoding = Decoding(max_new_tokens=NEW_TOKENS)
        record = loaded.record
        limits = budget(record, NEW_TOKENS, context_length(loaded.model))
        settings = GenerationSettings(max_new_tokens=limits.new_tokens)
        project, baseline = [], []
        encoder = prompt_encoder(loaded.tokenizer, record)
        for _ in range(args.rounds):
            started = time.perf_counter()
            commit = change_commit(staged_files(repo.path), finished, "staged")
            ours = suggestions(loaded, commit, decoding)
            project.append(time.perf_counter() - started)
            prompt = commit_message_prompt(commit, record, encoder, limits.prompt_tokens)
            started = time.perf_counter()
            (theirs,) = generate(loaded.model, loaded.tokenizer, [prompt], settings)
            baseline.append(time.perf_counter() - started)
            assert ours == [theirs.text.strip()], (ours, theirs.text)
    params = sum(p.numel() for p in loaded.model.parameters())
    print(f"model: {finished.model} ({params / 1e6:.2f} M parameters, block {record.seq_len})")
    print(f"process (python -m repotune suggest, cold): {process_seconds:.2f} s")
    print(f"load (base + adapter + tokenizer):         {load_seconds:.2f} s")
    print(f"suggest (in-process, best of {args.rounds}):          {min(project):.3f} s")
    print(f"baseline inference.generate (best of {args.rounds}):  {min(baseline):.3f} s")
    print(f"ratio suggest / baseline: {min(project) / min(baseline):.2f}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
