"""The commands a user types, checked by their effect: `--config key=value` reaching a stage,
`make verify` on a finished run, `make dag`, and a run with two models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from testdata.gitrepo import GitRepo
from testdata.workflow import (
    FAST,
    ROOT,
    copy_workflow,
    data_repository,
    fast_config,
    planned_jobs,
    snakemake,
)
from tests.run_fixtures import Run, copy_run
from tests.test_dag import rule_edges

pytestmark = pytest.mark.slow

VENV = Path(sys.executable).parent.parent
# The Makefile's `setup` would reinstall .venv whenever requirements change: take it as done.
MAKE = [
    shutil.which("make") or "make",
    "-f",
    str(ROOT / "Makefile"),
    f"VENV={VENV}",
    "-o",
    str(VENV / ".installed"),
]
SECOND = {
    "preset": "tiny",
    "name": "tiny-wide",
    "architecture": {"n_layer": 1, "n_head": 2, "n_embd": 48},
}


@pytest.fixture
def run(shared_run: Run) -> Run:
    """The session's finished run (tests/conftest.py): read it, or change a copy_run of it."""
    return shared_run


def run_config(run: Run, **overrides: object) -> dict:
    """The config the finished run was made with, with top-level keys replaced."""
    return {**run.config, **overrides}


def make(target: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``make <target>`` in ``cwd`` as a user runs it, this checkout's package first."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([*MAKE, target], cwd=cwd, env=environment, capture_output=True, text=True)


# --- --config key=value ------------------------------------------------------------------------


def test_a_config_value_on_the_command_line_reaches_the_tokenize_stage(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy").workdir
    result = snakemake(
        workdir, "--config", "tokenize={seq_len: 32}", "--until", "tokenize", config=run_config(run)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shards = workdir / "results" / "tiny" / "shards"
    assert json.loads((shards / "stats.json").read_text())["seq_len"] == 32
    blocks = datasets.load_from_disk(str(shards / "train"))
    assert {len(ids) for ids in blocks["input_ids"]} == {32}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tokenize={seq_len: many}", "config['tokenize']['seq_len']: 'many' is not of type"),
        ("tokenize={seq_length: 64}", "'seq_length' was unexpected"),
        ("train={max_steps: -3}", "config['train']['max_steps']: -3 is less than"),
    ],
    ids=["not-a-number", "unknown-key", "out-of-range"],
)
def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, value, message):
    config = fast_config(data_repository(tmp_path / "data"))
    result = snakemake(tmp_path, "-n", "--config", value, config=config)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("repotune error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# --- make verify -------------------------------------------------------------------------------


@pytest.mark.documented("make verify")
def test_make_verify_passes_on_a_finished_run(run):
    result = make("verify", run.workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed" not in result.stdout and "missing" not in result.stdout


def test_make_verify_fails_naming_a_modified_result(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy").workdir
    report = workdir / "results" / "tiny" / "eval" / "report.json"
    report.write_text(report.read_text().replace('"model"', '"modle"', 1))
    result = make("verify", workdir)
    assert result.returncode != 0
    named = [line for line in result.stdout.splitlines() if "results/tiny/eval/report.json" in line]
    assert len(named) == 1 and named[0].startswith("changed"), result.stdout


# --- make dag ----------------------------------------------------------------------------------


def dag_workflow(tmp_path: Path) -> Path:
    """A copy of the workflow in a git repository of its own (its default config learns from
    "."), with the committed docs/ to regenerate."""
    copy_workflow(tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    repo = GitRepo(tmp_path)
    repo.commit("The workflow")
    return tmp_path


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
@pytest.mark.documented("make dag")
def test_make_dag_draws_the_rule_graph(tmp_path):
    workflow = dag_workflow(tmp_path)
    for name in ("rulegraph.dot", "rulegraph.svg"):
        (workflow / "docs" / name).unlink()
    result = make("dag", workflow)
    assert result.returncode == 0, result.stdout + result.stderr
    dot = (workflow / "docs" / "rulegraph.dot").read_text()
    assert rule_edges(dot) == rule_edges((ROOT / "docs" / "rulegraph.dot").read_text())
    svg = (workflow / "docs" / "rulegraph.svg").read_text()
    drawn = {name for edge in rule_edges(dot) for name in edge}
    assert svg.lstrip().startswith(("<?xml", "<svg")) and all(name in svg for name in drawn)


def test_make_dag_without_graphviz_says_how_to_install_it(tmp_path):
    workflow = dag_workflow(tmp_path)
    empty = tmp_path / "no-dot"
    empty.mkdir()
    result = make("dag", workflow, PATH=str(empty))
    assert result.returncode != 0
    assert (
        "graphviz 'dot' not found" in result.stdout and "apt-get install graphviz" in result.stdout
    )
    assert (workflow / "docs" / "rulegraph.dot").read_bytes() == (
        ROOT / "docs" / "rulegraph.dot"
    ).read_bytes()


# --- two models --------------------------------------------------------------------------------


def test_two_models_plan_each_models_jobs_and_one_comparison(tmp_path):
    repo = data_repository(tmp_path / "data")
    config = fast_config(repo, models=[FAST["models"][0], SECOND])
    jobs = planned_jobs(snakemake(tmp_path, "-n", config=config))
    per_model = {"tokenize", "train", "evaluate", "export", "manifest"}
    assert {rule: jobs[rule] for rule in per_model} == dict.fromkeys(per_model, 2)
    assert jobs["compare_models"] == 1 and jobs["extract_commits"] == 1 and jobs["curate"] == 1


def test_a_second_model_gets_its_results_and_the_comparison_shows_both(run, tmp_path):
    workdir = copy_run(run, tmp_path / "copy").workdir
    config = run_config(run, models=[FAST["models"][0], SECOND])
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    results = workdir / "results"
    manifests = {
        name: json.loads((results / name / "manifest.json").read_text())
        for name in ("tiny", "tiny-wide")
    }
    assert manifests["tiny"] == json.loads((run.results / "tiny" / "manifest.json").read_text())
    wide = manifests["tiny-wide"]["config"]["models"]
    assert [entry["architecture"]["n_embd"] for entry in wide] == [48]
    table = (results / "comparison.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| metric |"))
    assert "tiny" in header and "tiny-wide" in header
    assert (results / "comparison.png").stat().st_size > 0
    check = make("verify", workdir)
    assert check.returncode == 0, check.stdout
