"""Real histories: does the repotune adapter make a *pretrained* code model better at a real
repository's future, and which of the recipe's choices matter? (issue 26, parts 2 and 3)

    make base    # first, once: the pretrained base (results/pretrained/model; docs/base.md)
    # the real run: three public repositories, cloned into the workdir when it runs, every
    # ablation; kept in build/real-histories/ (a rerun plans nothing and just reports)
    nice .venv/bin/python -m benchmarks.real_histories \\
        --repo https://github.com/pallets/flask --repo https://github.com/psf/requests \\
        --repo https://github.com/pallets/click
    # a quick look: a synthetic 400-commit history and a base pretrained in seconds on a few
    # standard-library modules, 60 steps a model, one ablation; in build/real-histories-quick/
    nice .venv/bin/python -m benchmarks.real_histories --quick

Per repository, ONE workflow run (the ``snakemake`` command line of testdata/workflow.py) whose
``models:`` hold the default adapter (the ``local-python`` preset, ``base:`` the absolute
``--base``) and one more ``local-python`` entry per ablation, each with its own name and its
``tokenize:``/``train:`` override. Extract, curate, snapshot and the FIM questions are shared:
an ablation costs its own tokenize, train and evaluate jobs. On the repository's held-out
newest commits (the time split's test commits) it compares:

* **the default adapter with its baseline, the pretrained base without adapter**: per-commit
  bits per token, FIM exact match and edit similarity, commit-message metrics, each with n,
  the 95% interval, p and the verdict exactly as the workflow's report.json gives them;
* **each ablation with the default adapter** (the baseline here): the paired difference
  ablation - default on the same held-out commits and questions, resampled by commit with the
  report's own code (repotune/evaluate/significance.py through report.metric_entry and
  scored_entry; the primary metric judged alone, the others Holm-adjusted or, where a null
  answer can win them, unjudged, by report.assign_verdicts), from the per-commit losses
  (report.json ``perplexity_by_commit``) and per-question scores (generations.jsonl
  ``scores``) each evaluation writes. The ablations: recency weighting on (the preset has it
  off), FIM documents off, snapshot files off (so no FIM documents either), another
  message<->change mix (whose test documents are rendered in that mix too: the same commits,
  another order of their tokens), another LoRA rank (alpha 2 r, the preset's ratio).

Printed, and written with a JSON of everything to ``<workdir>/real_histories.{md,json}``: the
repositories (URL, HEAD, commit counts, job time), the default-vs-base table and the ablation
table, as Markdown for BENCHMARKS.md. Clones are never refreshed (a new HEAD needs a new
workdir); a workdir refuses a base other than the one its runs used. ``--repo SOURCE=URL``
clones SOURCE (e.g. a local mirror) and reports URL.

Measured on the 2-core development machine shared with other developers (load 2.5 to 3.8),
everything at nice 19: the quick look from nothing 87 s and 109 s (13 to 15 s of it the
history and the base; in the slower run one 60-step training job took 58 s, the same job of
the ablation 6 s: starved by the other load), a rerun that plans nothing 1.7 s. The real run
has not been measured.
"""

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.evidence import timed_workflow  # noqa: E402
from repotune.evaluate import report  # noqa: E402
from repotune.evaluate.significance import paired_ratio  # noqa: E402
from repotune.models import PRETRAINED_BASE, load_preset, safe_name  # noqa: E402
from testdata.workflow import snakemake  # noqa: E402

PRESET = "local-python"
DEFAULT = PRESET  # the default adapter's model name (the preset's)
SECTIONS = ("tokenize", "train")


@dataclass(frozen=True)
class Ablation:
    """One model entry beside the default: what it changes, as tokenize:/train: overrides."""

    says: str
    overrides: Mapping[str, Mapping[str, Any]]


ABLATIONS = {
    # The preset trains without recency weighting since these ablations (BENCHMARKS.md): the
    # ablation turns it on. (The 2026-12-07 tables ran "no-recency" against a preset with it on.)
    "recency": Ablation("recency weighting on", {"train": {"weighted_sampling": True}}),
    "no-fim": Ablation("FIM documents off (fim_rate 0)", {"tokenize": {"fim_rate": 0.0}}),
    "no-files": Ablation("snapshot files off (so no FIM)", {"tokenize": {"files": False}}),
    "mix-0.2": Ablation("message->change 0.2 (not 0.5)", {"tokenize": {"message_to_change": 0.2}}),
    "mix-0.8": Ablation("message->change 0.8 (not 0.5)", {"tokenize": {"message_to_change": 0.8}}),
    # The preset trains at rank 64 since the 2026-12-08 tables, which ran rank 4 and 64
    # against a preset at rank 16.
    "rank-4": Ablation("LoRA rank 4, alpha 8 (not 64, 128)", {"train": {"lora_r": 4,
                                                                      "lora_alpha": 8}}),
    "rank-16": Ablation("LoRA rank 16, alpha 32 (not 64, 128)", {"train": {"lora_r": 16,
                                                                         "lora_alpha": 32}}),
}  # fmt: skip
# The default adapter's metrics shown (report.json order), and the ablation table's columns.
SHOWN = (
    "bits_per_token", "perplexity", "fim.exact_match", "fim.edit_similarity", "fim.parses",
    "commit_message.subject_exact_match", "commit_message.bnorm_bleu", "commit_message.rouge_l",
    "commit_message.edit_similarity", "code_change.exact_match", "code_change.edit_similarity",
)  # fmt: skip
ABLATION_COLUMNS = (
    "bits_per_token", "fim.exact_match", "fim.edit_similarity",
    "commit_message.subject_exact_match", "commit_message.bnorm_bleu",
)  # fmt: skip
GENERATED_TASKS = ("commit_message", "code_change", "fim")
MODEL_RULES = ("tokenize", "train", "evaluate")  # the jobs each model has of its own
BASE_HINT = (
    "build it with `make base` (or `.venv/bin/snakemake --cores all pretrain_base`; docs/base.md)"
    " or pass --base DIR"
)
# --quick: the base's corpus (a few standard-library modules) and size (testdata/pretrain.py's,
# the one the tests build in seconds through the same rule).
QUICK_CORPUS = ["{stdlib}/json/**/*.py", "{stdlib}/csv.py", "{stdlib}/textwrap.py"]


@dataclass(frozen=True)
class Repository:
    """A repository of the run: its name (a folder), where it is cloned from, the address
    reported, and the clone."""

    name: str
    source: str
    url: str
    path: Path


def parse_repo(text: str, workdir: Path) -> Repository:
    """``SOURCE`` or ``SOURCE=URL`` (clone SOURCE, report URL); the name is the URL's last
    part without ``.git`` (its parent's for a generic ``repo``)."""
    source, _, url = text.partition("=")
    if url and not re.match(r"^[a-z+]+://", url):
        source, url = text, ""
    url = url or (source if re.match(r"^[a-z+]+://|^git@", source) else str(Path(source).resolve()))
    parts = [part for part in re.split(r"[/:]", url.rstrip("/")) if part]
    last = re.sub(r"\.git$", "", parts[-1]) if parts else ""
    if last in ("", "repo", "repository") and len(parts) > 1:
        last = parts[-2]
    name = safe_name(last)
    return Repository(name, source, url, workdir / "repos" / name)


def git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(path), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def clone(repo: Repository) -> None:
    """``git clone`` into the workdir once (into a temporary name first: no half clone)."""
    if (repo.path / ".git").exists():
        return
    partial = repo.path.with_name(repo.path.name + ".part")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    repo.path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["git", "clone", "--quiet", repo.source, str(partial)], capture_output=True, text=True
    )
    if done.returncode:
        why = (done.stderr.strip().splitlines() or ["git clone failed"])[-1]
        sys.exit(f"--repo {repo.source}: cannot be cloned ({why}); give a git URL or path")
    partial.rename(repo.path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def base_facts(base: Path) -> dict[str, Any]:
    """The base's facts (its weights' sha256, context, the pretrain manifest's headline); exits
    in one line when it is missing."""
    weights, config = base / "model.safetensors", base / "config.json"
    if not (weights.is_file() and config.is_file()):
        sys.exit(f"--base {base}: no pretrained base there (config.json, model.safetensors); "
                 f"{BASE_HINT}")  # fmt: skip
    facts: dict[str, Any] = {"path": str(base), "sha256": file_sha256(weights)}
    facts["n_positions"] = json.loads(config.read_text())["n_positions"]
    manifest = base.parent / "model.json"
    if manifest.is_file():
        built = json.loads(manifest.read_text())
        facts["manifest"] = {
            key: built.get(key) for key in ("model", "training", "wall_seconds", "cache")
        }
    return facts


def same_base(facts: Mapping[str, Any], workdir: Path) -> None:
    """Record the base in the workdir, or exit in one line when its runs used another one (the
    workflow does not see a base's contents: its runs would silently mix two bases)."""
    record = workdir / "base.json"
    if record.is_file():
        used = json.loads(record.read_text())
        if used["sha256"] != facts["sha256"]:
            sys.exit(f"--base {facts['path']}: not the base this workdir's runs used "
                     f"({used['path']}, sha256 {used['sha256'][:12]}); use a new --workdir"
                     )  # fmt: skip
    else:
        record.write_text(json.dumps({"path": facts["path"], "sha256": facts["sha256"]}) + "\n")


def model_entry(name: str, base: Path, steps: int, seq_len: int, ablation: Ablation | None):
    """A local-python entry on ``base``: the default one, or with the ablation's overrides."""
    overrides = {} if ablation is None else ablation.overrides
    entry: dict[str, Any] = {"preset": PRESET, "name": name, "base": str(base)}
    for section, preset_keys in (
        ("tokenize", {"seq_len": seq_len}),
        ("train", {"max_steps": steps}),
    ):
        entry[section] = {**preset_keys, **overrides.get(section, {})}
    return entry


def run_config(
    repo: Path, base: Path, arguments: argparse.Namespace, seq_len: int
) -> dict[str, Any]:
    """The workflow config: the default adapter and one entry per ablation, every model on the
    same base and evaluated on the same questions; no behavioural tests (not what this
    benchmark reports, minutes each on 2 cores)."""
    models = [model_entry(DEFAULT, base, arguments.steps, seq_len, None)] + [
        model_entry(name, base, arguments.steps, seq_len, ABLATIONS[name])
        for name in arguments.ablations
    ]
    return {
        "repo": str(repo),
        "models": models,
        "evaluate": {
            "perplexity": {"max_blocks": arguments.max_blocks},
            "commit_messages": {"samples": arguments.message_samples},
            "code_changes": {"samples": arguments.code_samples},
            "behaviour": {"tests": None},
            "fim": {"samples": arguments.fim_samples, "max_new_tokens": 48},
        },
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def stage_seconds(run: Path) -> dict[str, float]:
    """Wall seconds of every job of the run, from the rules' benchmark TSVs (``s`` column)."""
    seconds = {}
    for path in sorted((run / "benchmarks" / "out").glob("*.tsv")):
        lines = path.read_text().splitlines()
        if len(lines) >= 2:
            seconds[path.stem] = round(float(lines[1].split("\t")[0]), 1)
    return seconds


def commit_counts(repo: Repository, run: Path) -> dict[str, Any]:
    """History (every commit HEAD reaches, merges too), extracted (no merges), kept by curate,
    and the time split."""
    extracted = read_json(run / "results" / "commits.stats.json")
    curation = read_json(run / "results" / "dataset" / "curation.json")
    return {
        "history": int(git(repo.path, "rev-list", "--count", "HEAD")),
        "extracted": extracted["commits"],
        "kept": curation["kept_commits"],
        **{split: facts["commits"] for split, facts in curation["split"].items()},
        "test_from": curation["split"]["test"]["first_committer_time"],
    }


def by_question(run: Path, model: str) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """The adapted model's score rows of generations.jsonl by question: (task, sha, path, k)
    with k counting the questions of one task, commit and path."""
    seen: Counter = Counter()
    rows = {}
    with open(run / "results" / model / "eval" / "generations.jsonl", encoding="utf-8") as lines:
        for row in map(json.loads, lines):
            if row["task"] not in GENERATED_TASKS:
                continue
            key = (row["task"], row["sha"], row.get("path", ""))
            rows[(*key, seen[key])] = row["scores"]["adapted"]
            seen[key] += 1
    return rows


def loss_entry(first: Mapping[str, Any], second: Mapping[str, Any], seed: int, enough: bool):
    """bits_per_token of ``second`` against ``first`` (two reports' adapted models): each side's
    per-commit losses over its own tokens, on the commits both scored, resampled by commit."""
    a, b = first["perplexity_by_commit"], second["perplexity_by_commit"]
    at = {sha: index for index, sha in enumerate(b["sha"])}
    both = [(i, at[sha]) for i, sha in enumerate(a["sha"]) if sha in at]
    nll_a = [a["adapted_nll"][i] for i, _ in both]
    nll_b = [b["adapted_nll"][j] for _, j in both]
    tokens_a = [a["tokens"][i] for i, _ in both]
    tokens_b = [b["tokens"][j] for _, j in both]

    def bits(nll: Sequence[float], tokens: Sequence[int]) -> float | None:
        return math.fsum(nll) / sum(tokens) / math.log(2) if sum(tokens) else None

    interval = paired_ratio(
        nll_a, nll_b, tokens_a, lambda loss: loss / math.log(2), seed,
        adapted_denominator=tokens_b,
    )  # fmt: skip
    return report.metric_entry(
        "bits_per_token", bits(nll_a, tokens_a), bits(nll_b, tokens_b), sum(tokens_b), interval,
        enough,
    )  # fmt: skip


def model_seconds(seconds: Mapping[str, float], model: str) -> float:
    """Wall seconds of one model's own jobs (tokenize, train, evaluate): what an ablation
    adds to a run."""
    return round(sum(seconds.get(f"{rule}_{model}", 0.0) for rule in MODEL_RULES), 1)


def ablation_metrics(
    run: Path, name: str, default: Mapping[str, Any], seconds: Mapping[str, float]
) -> dict[str, Any]:
    """Every metric of ablation ``name`` against the default adapter, entries as report.json's
    (``default``/``ablation`` for its ``base``/``adapted``): intervals resampled by commit, the
    primary metric judged alone, the secondary ones Holm-adjusted, exploratory ones unjudged."""
    other = read_json(run / "results" / name / "eval" / "report.json")
    seed = default["settings"]["seed"]
    enough = report.enough_test_commits(default["samples"]["test_commits"])
    metrics = {"bits_per_token": loss_entry(default, other, seed, enough)}
    first, second = by_question(run, DEFAULT), by_question(run, name)
    keys = [key for key in first if key in second]
    for metric in report.METRICS:
        task, _, score = metric.partition(".")
        if task not in GENERATED_TASKS:
            continue
        paired = [
            (key[1], first[key][score], second[key][score])
            for key in keys
            if key[0] == task and first[key][score] is not None and second[key][score] is not None
        ]
        if paired:
            shas, ours, theirs = (list(column) for column in zip(*paired, strict=True))
            metrics[metric] = report.scored_entry(metric, ours, theirs, seed, shas, enough)
    report.assign_verdicts(metrics, default["primary_metric"], enough)
    for entry in metrics.values():
        entry["default"], entry["ablation"] = entry.pop("base"), entry.pop("adapted")
    return {
        "model": name,
        "says": ABLATIONS[name].says,
        "base_bits_per_token": other["perplexity"]["base"]["bits_per_token"],
        "job_seconds": model_seconds(seconds, name),
        "training": other["training"],
        "metrics": metrics,
    }


def collect(repo: Repository, run: Path, ablations: Sequence[str], invocation: float) -> dict:
    """Everything the tables and the JSON say about one repository's run."""
    default = read_json(run / "results" / DEFAULT / "eval" / "report.json")
    seconds = stage_seconds(run)
    return {
        "name": repo.name,
        "url": repo.url,
        "head": git(repo.path, "rev-parse", "HEAD"),
        "commits": commit_counts(repo, run),
        "invocation_seconds": round(invocation, 1),
        "stage_seconds": seconds,
        "job_seconds": round(sum(seconds.values()), 1),
        "default": {
            "model": DEFAULT,
            "base": default["base"],
            "samples": default["samples"],
            "training": default["training"],
            "primary_metric": default["primary_metric"],
            "job_seconds": model_seconds(seconds, DEFAULT),
            "metrics": {
                name: default["metrics"][name] for name in SHOWN if name in default["metrics"]
            },
        },
        "ablations": [ablation_metrics(run, name, default, seconds) for name in ablations],
    }


def n_of(entry: Mapping[str, Any]) -> str:
    interval = entry.get("interval")
    if interval is None:
        return str(entry["count"])
    return f"{interval['n']} {entry['unit']} ({entry['count']} {entry['items']})"


def p_of(entry: Mapping[str, Any]) -> str:
    """The p the verdict used, labelled as report.md labels it."""
    if entry.get("role") == report.SECONDARY:
        return report.p_equals("Holm p", entry.get("p_adjusted"))
    return report.p_equals("p", entry.get("p"))


def repository_tables(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The repositories, and the default adapter against the pretrained base on each."""
    lines = [
        "| repository | HEAD | commits: history / extracted / kept | train / validation / test "
        "| test from | jobs (sum) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        c = result["commits"]
        lines.append(
            f"| [{result['name']}]({result['url']}) | `{result['head'][:12]}` | "
            f"{c['history']} / {c['extracted']} / {c['kept']} | {c['train']} / "
            f"{c['validation']} / {c['test']} | {c['test_from'][:10]} | "
            f"{result['job_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "| repository | metric | base | adapted | delta [95% interval] | n | p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, entry in result["default"]["metrics"].items():
            if not entry["count"]:
                continue  # not measured (e.g. no code-change questions asked)
            lines.append(
                f"| {result['name']} | {report.METRICS[name].title} | "
                f"{report.format_value(name, entry['base'])} | "
                f"{report.format_value(name, entry['adapted'])} | "
                f"{report.format_delta(name, entry)} | {n_of(entry)} | {p_of(entry)} | "
                f"{entry['verdict']} |"
            )
    return lines


def ablation_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per repository and ablation: ablation - default adapter, its interval, n and verdict."""
    titles = [report.METRICS[name].title for name in ABLATION_COLUMNS]
    lines = [
        "| repository | ablation | its jobs | " + " | ".join(titles) + " |",
        "|---|---|---|" + "---|" * len(titles),
    ]
    for result in results:
        for ablation in result["ablations"]:
            cells = []
            for name in ABLATION_COLUMNS:
                entry = ablation["metrics"].get(name)
                if entry is None:
                    cells.append("n/a")
                    continue
                shown = {"delta": entry["delta"], "interval": entry["interval"]}
                n = entry["interval"]["n"] if entry["interval"] else 0
                cells.append(
                    f"{report.format_delta(name, shown)}, n={n}, {p_of(entry)}, {entry['verdict']}"
                )
            lines.append(
                f"| {result['name']} | `{ablation['model']}`: {ablation['says']} | "
                f"{ablation['job_seconds'] / 60:.1f} min | " + " | ".join(cells) + " |"
            )
    return lines


def quick_inputs(workdir: Path, commits: int) -> tuple[str, Path]:
    """--quick: a synthetic history (benchmarks/synthetic_repo.py) and a base pretrained on a
    few standard-library modules by the workflow's pretrain_base rule at testdata/pretrain.py's
    size (seconds), both in ``workdir``; returns the history's path and the base."""
    from benchmarks.synthetic_repo import build
    from testdata.pretrain import TINY_SIZE

    history = workdir / "synthetic"
    if not (history / ".git").exists():
        build(history, commits, files=40, seed=0)
    place = workdir / "base"
    base = place / PRETRAINED_BASE
    if not (base / "model.safetensors").is_file():
        place.mkdir(parents=True, exist_ok=True)
        config = {
            "repo": str(history),
            "pretrain": {
                "corpus": {"include": QUICK_CORPUS},
                "sizes": {"cpu": TINY_SIZE},
                "cache_dir": str(place / "cache"),
            },
        }
        built = snakemake(place, "pretrain_base", config=config)
        if built.returncode:
            sys.exit(f"the quick base failed:\n{built.stderr[-3000:]}")
    return str(history), base


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", default=[], metavar="SOURCE[=URL]",
                        help="a repository to clone (URL or path), repeatable; =URL: report "
                             "that address (e.g. for a local mirror)")  # fmt: skip
    parser.add_argument(
        "--workdir",
        type=Path,
        help="clones, runs and results, kept (default: "
        "build/real-histories, build/real-histories-quick with --quick)",
    )
    parser.add_argument("--base", type=Path, default=ROOT / PRETRAINED_BASE,
                        help="the pretrained base (default: what `make base` builds)")  # fmt: skip
    parser.add_argument("--steps", type=int, help="training steps per model (default 300; 60 "
                        "with --quick)")  # fmt: skip
    parser.add_argument("--ablations", help="comma list of " + ", ".join(ABLATIONS) + ", or "
                        "none (default: all; no-fim with --quick)")  # fmt: skip
    parser.add_argument("--max-blocks", type=int, help="test blocks scored for bits per token "
                        "(evaluate.perplexity.max_blocks; default 1000; with --quick 0, all)"
                        )  # fmt: skip
    parser.add_argument("--message-samples", type=int, help="commit messages asked (default "
                        "100, 30 with --quick)")  # fmt: skip
    parser.add_argument("--fim-samples", type=int, help="FIM questions asked (default 100, 30 "
                        "with --quick)")  # fmt: skip
    parser.add_argument("--code-samples", type=int, default=0,
                        help="code changes asked (default 0: not what this compares)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a quick look: a synthetic history "
                        "and a base built in seconds instead of --repo and --base")  # fmt: skip
    parser.add_argument("--quick-commits", type=int, default=400, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    quick = arguments.quick
    defaults = {"steps": (300, 60), "max_blocks": (1000, 0), "message_samples": (100, 30),
                "fim_samples": (100, 30), "ablations": (",".join(ABLATIONS), "no-fim")}  # fmt: skip
    for key, (real, small) in defaults.items():
        if getattr(arguments, key) is None:
            setattr(arguments, key, small if quick else real)
    chosen = [] if arguments.ablations == "none" else arguments.ablations.split(",")
    unknown = [name for name in chosen if name not in ABLATIONS]
    if unknown:
        parser.error(
            f"--ablations {','.join(unknown)}: unknown; use {', '.join(ABLATIONS)} or none"
        )
    arguments.ablations = list(dict.fromkeys(chosen))
    if quick == bool(arguments.repo):
        parser.error("give --repo (at least one) or --quick, not both")
    return arguments


def main() -> None:
    arguments = parse_arguments()
    default = ROOT / "build" / ("real-histories-quick" if arguments.quick else "real-histories")
    workdir = (arguments.workdir or default).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = arguments.base.resolve()
    sources = arguments.repo
    if arguments.quick:
        history, base = quick_inputs(workdir, arguments.quick_commits)
        sources = [f"{history}=file://{history}"]
    repos = [parse_repo(text, workdir) for text in sources]
    names = Counter(repo.name for repo in repos)
    if twice := [name for name, count in names.items() if count > 1]:
        sys.exit(f"--repo: two repositories are named {twice[0]}; give each its own =URL")
    facts = base_facts(base)
    for repo in repos:
        clone(repo)
    same_base(facts, workdir)
    seq_len = min(load_preset(PRESET)["tokenize"]["seq_len"], facts["n_positions"])
    print(f"workdir: {workdir}\nbase: {base} (sha256 {facts['sha256'][:12]}, context {seq_len})")
    print(f"ablations: {', '.join(arguments.ablations) or 'none'}; {arguments.steps} steps a model")
    results = []
    for repo in repos:
        run = workdir / "runs" / repo.name
        run.mkdir(parents=True, exist_ok=True)
        config = run_config(repo.path, base, arguments, seq_len)
        print(f"\n{repo.name}: {repo.url} at {git(repo.path, 'rev-parse', 'HEAD')[:12]}; "
              f"the workflow in {run} (logs in {run / 'logs'})")  # fmt: skip
        seconds = timed_workflow(run, config, repo.name)
        results.append(collect(repo, run, arguments.ablations, seconds))
    settings = {key: value for key, value in vars(arguments).items() if key not in ("workdir",)}
    markdown = [
        "### Repositories, and the default adapter against the pretrained base",
        "",
        *repository_tables(results),
    ]
    if arguments.ablations:
        markdown += [
            "",
            "### Ablations against the default adapter (delta = ablation - default adapter)",
            "",
            *ablation_table(results),
        ]
    text = "\n".join(markdown) + "\n"
    print("\n" + text)
    (workdir / "real_histories.md").write_text(text, encoding="utf-8")
    everything = {"settings": settings, "base": facts, "repositories": results}
    (workdir / "real_histories.json").write_text(
        json.dumps(everything, indent=2, default=str) + "\n", encoding="utf-8"
    )
    print(f"written: {workdir / 'real_histories.md'}, {workdir / 'real_histories.json'}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
