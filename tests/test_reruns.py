"""Only stale steps rerun: dry runs on a finished fixture run plan exactly the stale jobs."""

import json

import pytest

from testdata.workflow import (
    FAST,
    ROOT,
    all_jobs,
    copy_workflow,
    data_repository,
    fast_config,
    model_jobs,
    planned_jobs,
    snakemake,
)

pytestmark = pytest.mark.slow
MODEL = FAST["models"][0]
# An absolute path, so the copied workflow below reads the very same behavioural-test file
# (the default is resolved inside the workflow directory, which the copy moves).
BEHAVIOUR = {"behaviour": {"tests": str(ROOT / "config" / "behaviour_tests.yaml")}}


def config_of(repo, evaluate=None, **overrides):
    """The FAST config on ``repo`` with overrides; ``evaluate`` keys join BEHAVIOUR."""
    return fast_config(repo, evaluate={**BEHAVIOUR, **(evaluate or {})}, **overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A fixture repository and a work directory where the FAST run has completed."""
    root = tmp_path_factory.mktemp("reruns")
    repo = data_repository(root / "data")
    workdir = root / "work"
    workdir.mkdir()
    assert planned_jobs(snakemake(workdir, "-n", config=config_of(repo))) == all_jobs()
    run = snakemake(workdir, config=config_of(repo))
    assert run.returncode == 0, run.stderr[-3000:]
    return repo, workdir


def dry(workdir, config, *args):
    return planned_jobs(snakemake(workdir, "-n", *args, config=config))


def test_nothing_changed_plans_nothing(finished):
    repo, workdir = finished
    assert dry(workdir, config_of(repo)) == {}


@pytest.mark.parametrize(
    "change",
    [
        {"tokenize": {"seq_len": 48}},
        {"models": [{**MODEL, "template": "starcoder"}]},
    ],
    ids=["seq_len", "template"],
)
def test_tokenization_change_reruns_from_tokenize(finished, change):
    repo, workdir = finished
    assert dry(workdir, config_of(repo, **change)) == model_jobs()


def test_evaluation_setting_reruns_evaluate_and_manifest_only(finished):
    repo, workdir = finished
    jobs = dry(workdir, config_of(repo, evaluate={"examples": 3}))
    assert jobs == {"all": 1, "evaluate": 1, "compare_models": 1, "manifest": 1}


def test_second_model_adds_only_its_own_jobs(finished):
    repo, workdir = finished
    second = {**MODEL, "name": "tiny2"}
    jobs = dry(workdir, config_of(repo, models=[MODEL, second]))
    assert jobs == model_jobs()  # one of each: tiny's own jobs are not planned again


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("curate.py", model_jobs(curate=1)),
        ("tokenize.py", model_jobs()),
        ("manifest.py", {"all": 1, "manifest": 1}),
    ],
)
def test_edited_script_reruns_its_rule_and_what_follows(finished, tmp_path, script, expected):
    repo, workdir = finished
    snakefile = copy_workflow(tmp_path / "workflow")
    command = ("--snakefile", str(snakefile), "-n")
    assert planned_jobs(snakemake(workdir, *command, config=config_of(repo))) == {}
    with open(snakefile.parent / "scripts" / script, "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    assert planned_jobs(snakemake(workdir, *command, config=config_of(repo))) == expected


def test_new_commit_reruns_everything_and_extracts_only_it(finished):
    repo, workdir = finished
    repo.commit("Add module number 6", {"pkg/m6.py": "VALUE = 6\n"})
    assert dry(workdir, config_of(repo)) == all_jobs()
    run = snakemake(workdir, config=config_of(repo))
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads((workdir / "results" / "commits.stats.json").read_text())
    assert (stats["commits"], stats["commits_extracted"], stats["incremental"]) == (7, 1, True)
    assert dry(workdir, config_of(repo)) == {}
