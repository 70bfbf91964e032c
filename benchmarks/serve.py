"""`repotune suggest` through a warm `repotune serve` against the cold in-process command.

Measured on the run in ``--results`` (default: the default tiny preset trained a few steps on a
fixture history and exported merged, as `make run` with ``export.merged`` leaves it), for the
staged change of a fixture repository (one edited module), each a separate
``python -m repotune suggest`` process as the hook runs it:

* **cold, merged**: ``suggest --no-server`` loading the exported merged model (no peft);
* **cold, adapter** (the baseline, what every suggestion cost before): ``suggest --no-server``
  on a copy of the run without ``export/merged``, base + adapter through peft;
* **warm**: ``suggest`` with ``repotune serve`` running for the run: the process asks the
  server. Its answer is asserted equal to the cold one;
* **throughput**: ``/v1/completions`` requests (one FIM gap, 16 new tokens, greedy) from 1
  client, then from ``--clients`` at once, in completions per second;
* **breakdown**: where a cold process spends its time (interpreter start, ``import torch``,
  ``import transformers`` and the model classes, the rest of the imports, loading, the
  suggestion), timed inside one process, and the largest imports by ``python -X importtime``.

p50/p95 over ``--runs`` runs each. The machine is shared: the load average is printed before
and after.

Run: .venv/bin/python -m benchmarks.serve [--results DIR] [--runs 20] [--clients 8]
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from benchmarks.suggest import default_run, staged_change  # noqa: E402
from repotune.serve import client  # noqa: E402

MODEL = "tiny"
BREAKDOWN = """
import sys, time
from pathlib import Path
started = float(sys.argv[1])
marks = [("interpreter start", time.time() - started)]
def mark(name):
    marks.append((name, time.time() - started - sum(s for _, s in marks)))
import torch
mark("import torch")
import transformers
from transformers import AutoModelForCausalLM, GPT2LMHeadModel
mark("import transformers + model classes")
from repotune.cli.diff import staged_files
from repotune.cli.run import find_run, load
from repotune.cli.suggest import change_commit, suggestions
from repotune.inference.decoding import Decoding
from repotune.modeling import load_merged
mark("the rest of the imports")
run = find_run(Path(sys.argv[2]), None)
loaded = load(run, "cpu")
mark("load (" + ("merged" if "merged" in loaded.source else "adapter") + ", tokenizer)")
suggestions(loaded, change_commit(staged_files("."), run, "staged"), Decoding())
mark("suggestion (diff, filters, prompt, decode)")
print(repr(marks))
print("peft imported:", "peft" in sys.modules)
"""


def without_merged(results: Path, root: Path) -> Path:
    """A copy of the run without its merged export: the adapter path (peft)."""
    copy = root / "adapter-only" / "results"
    shutil.copytree(results, copy)
    shutil.rmtree(copy / MODEL / "export" / "merged")
    return copy


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    return seconds, done.stdout


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def suggest_runs(
    results: Path, repo: Path, env: dict[str, str], runs: int, *extra: str
) -> tuple[list[float], set[str]]:
    command = [sys.executable, "-m", "repotune", "suggest", "--results", str(results), *extra]
    samples, outputs = [], set()
    for _ in range(runs):
        seconds, out = timed(command, repo, env)
        samples.append(seconds)
        outputs.add(out)
    return samples, outputs


def throughput(connection: client.Connection, prefix: str, requests: int, clients: int) -> float:
    body = {"prompt": prefix, "suffix": "\n", "max_tokens": 16, "path": "pkg/app.py"}

    def one(_: int) -> str:
        return connection.post("/v1/completions", body, 300)["choices"][0]["text"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        texts = set(pool.map(one, range(requests)))
    seconds = time.perf_counter() - started
    assert len(texts) == 1, texts  # greedy: every request gets the same answer
    return requests / seconds


def start_server(results: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "repotune", "serve", "--results", str(results),
               "--port", "0", "--idle-timeout", "0", "--device", "cpu"]  # fmt: skip
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    while client.find(results, MODEL) is None:
        assert process.poll() is None, log.read_text()
        time.sleep(0.02)
    return process, time.perf_counter() - started


def breakdown(results: Path, repo: Path, env: dict[str, str]) -> None:
    marks_line, peft_line = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, repr(time.time()), str(results)],
        cwd=repo, env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()[-2:]  # fmt: skip
    marks = eval(marks_line)  # our own repr of (name, seconds) pairs
    print("cold process, timed inside it (merged model):")
    for name, seconds in marks:
        print(f"  {name:45s} {seconds:6.2f} s")
    print(f"  {'total':45s} {sum(s for _, s in marks):6.2f} s; {peft_line}")
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "repotune", "suggest", "--no-server",
         "--results", str(results)],
        cwd=repo, env=env, capture_output=True, text=True,
    ).stderr  # fmt: skip
    top = []
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("   "):
            top.append((int(parts[1]), parts[2].strip()))  # top-level imports only
    print("largest top-level imports (python -X importtime, cumulative):")
    for micros, name in sorted(top, reverse=True)[:6]:
        print(f"  {name:45s} {micros / 1e6:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, help="a finished run (default: build one)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=80)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        results = args.results.resolve() if args.results else default_run(root, merged=True)
        repo = staged_change(root).path
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REPOTUNE_HOME": str(root / "home")}
        os.environ["REPOTUNE_HOME"] = env["REPOTUNE_HOME"]
        breakdown(results, repo, env)
        cold, cold_out = suggest_runs(results, repo, env, args.runs, "--no-server")
        adapter, adapter_out = suggest_runs(
            without_merged(results, root), repo, env, args.runs, "--no-server"
        )
        process, startup = start_server(results, env, root / "serve.log")
        try:
            warm, warm_out = suggest_runs(results, repo, env, args.runs)
            connection = client.find(results, MODEL)
            assert connection is not None
            prefix = (repo / "pkg" / "app.py").read_text()[:200]
            single = throughput(connection, prefix, args.requests, 1)
            parallel = throughput(connection, prefix, args.requests, args.clients)
        finally:
            process.terminate()
            process.wait(60)
    assert len(cold_out) == 1 and warm_out == cold_out, (cold_out, warm_out)
    print(f"answers: warm == cold merged ({json.dumps(next(iter(cold_out)))[:60]}...); "
          f"adapter path {'equal' if adapter_out == cold_out else 'DIFFERENT'}")  # fmt: skip
    print(f"suggest, {args.runs} runs each          p50      p95")
    for name, samples in (
        ("cold, adapter (baseline)", adapter),
        ("cold, merged", cold),
        ("warm, through the server", warm),
    ):
        p50, p95 = percentiles(samples)
        print(f"  {name:28s} {p50:6.2f} s {p95:6.2f} s")
    print(f"server start to ready: {startup:.2f} s")
    print(f"ratio cold adapter / warm (p50): {percentiles(adapter)[0] / percentiles(warm)[0]:.1f}x")
    print(f"ratio cold merged / warm (p50):  {percentiles(cold)[0] / percentiles(warm)[0]:.1f}x")
    print(
        f"completions/s (16 tokens): 1 client {single:.1f}, {args.clients} clients {parallel:.1f}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
