"""The evaluate stage through the snakemake command line, on a fixture repository.

One workflow run (module fixture) on a repository whose newest commits, the test split, follow
the pattern of the older ones: the adapter has something real to learn, so it must beat its
base on perplexity. The same run is checked for a complete report.json, valid plots and a
Snakemake HTML report that contains them.
"""

import json
import math
from pathlib import Path

import matplotlib.image
import pyarrow.parquet as pq
import pytest

from repotune.evaluate.null_models import NULL_MODELS
from repotune.evaluate.report import METRICS, NOT_JUDGED
from testdata.gitrepo import GitRepo
from testdata.workflow import FAST, planned_jobs, snakemake

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = (
    "timeout", "retries", "cache_dir", "log_level", "workers", "batch_size", "seed", "root",
    "encoding", "user", "token_ttl", "mirror", "proxy", "locale", "theme", "port", "host",
    "prefix", "suffix", "limit",
)  # fmt: skip
EVALUATE = {
    "perplexity": {"batch_size": 8},
    "commit_messages": {"samples": 3, "max_new_tokens": 12},
    "code_changes": {"samples": 3, "max_new_tokens": 12},
    "behaviour": {"max_new_tokens": 12},
    "examples": 2,
}
# FAST, with a model wide enough (two layers of 64) and steps enough (60) to learn the pattern.
CONFIG = {
    **FAST,
    "models": [{"preset": "tiny", "architecture": {"n_layer": 2, "n_head": 2, "n_embd": 64}}],
    "train": {**FAST["train"], "max_steps": 60, "max_epochs": 20},
    "curate": {"split": {"test_size": 3, "validation_size": 2}},
    "evaluate": EVALUATE,
}


def patterned_repository(path: Path) -> GitRepo:
    """Twenty commits that each add one settings accessor, all in the same shape."""
    repo = GitRepo(path)
    for name in NAMES:
        code = (
            f"def get_{name}(config):\n"
            f'    """Return the {name} setting."""\n'
            f'    return config["{name}"]\n'
        )
        repo.commit(f"Add the {name} setting accessor", {f"settings/{name}.py": code})
    return repo


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("evaluate-workflow")
    repo = patterned_repository(root / "data")
    workdir = root / "work"
    workdir.mkdir()
    config = {"repo": str(repo.path), **CONFIG}
    result = snakemake(workdir, "results/comparison.md", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, config


@pytest.mark.slow
def test_report_has_every_metric_for_base_and_adapted(run):
    workdir, _ = run
    report = json.loads((workdir / "results/tiny/eval/report.json").read_text())
    assert set(report["metrics"]) == set(METRICS)
    # Each test commit adds a whole file: left empty, every gap parses, so parsing tells nothing.
    parses = report["metrics"].pop("fim.parses")
    assert (parses["count"], parses["base"], parses["verdict"]) == (0, None, "n/a")
    fim = report["fim"]["empty_middle_parses"]
    assert fim["parsing"] == fim["n"] == report["fim"]["python_questions"]
    for name, entry in report["metrics"].items():
        for key in ("base", "adapted", "delta"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key]), (name, key)
        assert entry["delta"] == pytest.approx(entry["adapted"] - entry["base"])
        assert entry["count"] > 0, name
    samples = report["samples"]
    assert (samples["test_commits"], samples["commit_messages"], samples["code_changes"]) == (
        3,
        3,
        3,
    )
    assert samples["behaviour_tests"] == 6 and samples["perplexity_tokens"] > 0
    assert report["metrics"]["perplexity"]["count"] == samples["perplexity_tokens"]
    summary = json.loads((workdir / "results/tiny/adapter/training_summary.json").read_text())
    assert report["training"]["steps"] == summary["steps"] == 60
    assert report["training"]["final_train_loss"] == summary["final_train_loss"]
    assert len(report["examples"]) == 2

    # What another run's scores of the same commits and questions are paired with
    # (benchmarks/real_histories.py): the per-commit losses and each question's scores add up
    # to the report's values.
    by_commit = report["perplexity_by_commit"]
    assert len(by_commit["sha"]) == samples["perplexity_commits"] == 3
    assert sum(by_commit["tokens"]) == samples["perplexity_tokens"]
    for name in ("base", "adapted"):
        loss = math.fsum(by_commit[f"{name}_nll"]) / sum(by_commit["tokens"])
        assert loss == pytest.approx(report["perplexity"][name]["loss"], rel=1e-12)
    rows = [json.loads(line) for line in (workdir / "results/tiny/eval/generations.jsonl").open()]
    for name, entry in report["metrics"].items():
        task, _, score = name.partition(".")
        if task not in ("commit_message", "code_change", "fim") or not entry["count"]:
            continue
        for variant in ("base", "adapted"):
            scores = [row["scores"][variant][score] for row in rows if row["task"] == task]
            assert math.fsum(scores) / len(scores) == pytest.approx(entry[variant]), name
    generations = (workdir / "results/tiny/eval/generations.jsonl").read_text().splitlines()
    assert len(generations) == 3 + 3 + 3 + 2  # the message tests check the 3 commit messages
    markdown = (workdir / "results/tiny/eval/report.md").read_text()
    assert "| perplexity ↓ |" in markdown and "![loss curves](loss_curves.png)" in markdown
    # The null baselines: every generated metric on each null model's answers, no model run.
    nulls = report["null_baselines"]
    assert set(nulls) == {name for name in METRICS if METRICS[name].task != "perplexity"}
    assert {tuple(values) for values in nulls.values()} == {NULL_MODELS}
    empty = {name: values["empty"] for name, values in nulls.items()}
    assert empty["commit_message.subject_exact_match"] == empty["code_change.exact_match"] == 0
    assert empty["fim.exact_match"] == 0 and empty["fim.parses"] is None  # no gap tells here
    assert "| metric | empty | echo | random | other_reference |" in markdown


@pytest.mark.slow
def test_fim_questions_are_built_once_and_scored_for_both_models(run):
    workdir, _ = run
    built = json.loads((workdir / "results/fim/fim_questions.json").read_text())
    assert built["asked"] == built["test_commits"] == 3 and built["languages"] == {"python": 3}
    questions = pq.read_table(workdir / "results/fim/questions.parquet").to_pylist()
    # Each test commit adds one whole file: the middle is the file, nothing around it.
    assert {row["path"] for row in questions} == {f"settings/{name}.py" for name in NAMES[-3:]}
    assert all(row["prefix"] == row["suffix"] == "" for row in questions)
    report = json.loads((workdir / "results/tiny/eval/report.json").read_text())
    assert report["samples"]["fim_questions"] == 3 and report["fim"]["evaluated"] is True
    for metric in ("exact_match", "edit_similarity"):
        entry = report["metrics"][f"fim.{metric}"]
        assert entry["count"] == entry["interval"]["n"] == 3 and entry["unit"] == "commits"
    # A whole file left empty parses: no question where parsing tells anything.
    assert report["metrics"]["fim.parses"]["count"] == 0
    rows = [json.loads(line) for line in (workdir / "results/tiny/eval/generations.jsonl").open()]
    fim_rows = [row for row in rows if row["task"] == "fim"]
    assert [row["reference"] for row in fim_rows] == [row["middle"] for row in questions]
    assert all(isinstance(row["base"], str) and row["adapted_finish"] for row in fim_rows)
    markdown = (workdir / "results/tiny/eval/report.md").read_text()
    assert "3 fill-in-the-middle questions (3 Python)" in markdown
    assert "| FIM exact match ↑ |" in markdown and "| 3 commits (3 questions) |" in markdown
    assert report["examples"][0]["reference"].strip() in markdown.replace("<br>", "\n")


@pytest.mark.slow
def test_report_is_honest_about_three_test_commits_and_an_untrained_base(run):
    workdir, _ = run
    report = json.loads((workdir / "results/tiny/eval/report.json").read_text())
    assert report["base"]["source"] == "built"
    assert report["samples"]["enough_test_commits"] is False
    assert report["metrics"].pop("fim.parses")["verdict"] == "n/a"  # nothing it can tell here
    for name, entry in report["metrics"].items():
        low, high = entry["interval"]["delta"]
        assert low <= high and entry["interval"]["resamples"] == 2000, name
        judged = entry["role"] != "exploratory"
        assert entry["verdict"] == ("too few to tell" if judged else NOT_JUDGED), name
    # Perplexity is resampled by commit: n is the test commits, whatever the blocks.
    assert report["metrics"]["bits_per_token"]["interval"]["n"] == 3
    assert report["samples"]["perplexity_commits"] == 3
    assert report["primary_metric"] == "bits_per_token"
    assert report["metrics"]["bits_per_token"]["role"] == "primary"
    assert {kind["count"] for kind in report["behaviour_by_kind"].values()} == {4, 2}
    finish = report["generation"]["tasks"]["commit_message"]["adapted"]["finish"]
    assert set(finish) == {"eos", "stop", "length"} and sum(finish.values()) == 3
    markdown = (workdir / "results/tiny/eval/report.md").read_text()
    headline = markdown.splitlines()[2]
    assert headline.startswith("On n=3 held-out test commits, the primary metric, bits per token")
    assert "only n=3 commits, too few to tell" in headline and "better on" not in headline
    assert "untrained (random initialisation)" in markdown
    assert "## How generations ended" in markdown
    comparison = (workdir / "results/comparison.md").read_text()
    assert "`tiny` (too few test commits: 3)" in comparison


@pytest.mark.slow
def test_adapter_beats_its_base_on_perplexity_of_patterned_commits(run):
    workdir, _ = run
    metrics = json.loads((workdir / "results/tiny/eval/report.json").read_text())["metrics"]
    assert metrics["perplexity"]["adapted"] < 0.8 * metrics["perplexity"]["base"]
    assert metrics["bits_per_token"]["delta"] < 0


@pytest.mark.slow
def test_plots_are_valid_png_files(run):
    workdir, _ = run
    for path in (
        workdir / "results/tiny/eval/loss_curves.png",
        workdir / "results/tiny/eval/metrics.png",
        workdir / "results/comparison.png",
    ):
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    comparison = (workdir / "results/comparison.md").read_text()
    assert "`tiny`" in comparison and "![comparison](comparison.png)" in comparison


@pytest.mark.slow
@pytest.mark.documented(".venv/bin/snakemake --report report.html")
def test_snakemake_report_contains_plots_and_reports(run):
    workdir, config = run
    result = snakemake(workdir, "results/comparison.md", "--report", "report.html", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    for path in (
        "results/tiny/eval/report.md",
        "results/tiny/eval/loss_curves.png",
        "results/tiny/eval/metrics.png",
        "results/comparison.md",
        "results/comparison.png",
    ):
        assert f'"{path}": {{"name": "{Path(path).name}"' in html, path
    # The three PNGs are embedded (base64 of the PNG signature), captions rendered per model.
    assert html.count("iVBORw0KGgo") >= 3
    assert "Training loss of model tiny" in html


@pytest.mark.slow
def test_changing_an_evaluation_setting_reruns_only_evaluation(run):
    workdir, config = run
    assert planned_jobs(snakemake(workdir, "results/comparison.md", "-n", config=config)) == {}
    changed = {**config, "evaluate": {**EVALUATE, "examples": 1}}
    dry = snakemake(workdir, "results/comparison.md", "-n", config=changed)
    assert planned_jobs(dry) == {"evaluate": 1, "compare_models": 1}
    fewer = {**config, "evaluate": {**EVALUATE, "fim": {"samples": 2}}}
    dry = snakemake(workdir, "results/comparison.md", "-n", config=fewer)
    assert planned_jobs(dry) == {"fim_questions": 1, "evaluate": 1, "compare_models": 1}
    off = {**config, "evaluate": {**EVALUATE, "fim": {"enabled": False}}}
    assert planned_jobs(snakemake(workdir, "results/comparison.md", "-n", config=off)) == {
        "evaluate": 1,
        "compare_models": 1,
    }
