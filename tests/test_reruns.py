"""Only stale steps rerun: dry runs on a finished fixture run plan exactly the stale jobs."""

import json
import os
import shlex

import pytest

from repotune.codehash import CodeHasher
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
TRAIN_ON = {"all": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1}


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
        ("curate.py", model_jobs(curate=1, snapshot=1, fim_questions=1)),
        ("snapshot.py", model_jobs(snapshot=1)),  # the files feed tokenize
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


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("repotune/extract/gitlog.py", all_jobs()),
        # the snapshot and the FIM questions filter files too
        ("repotune/curate/filters.py", model_jobs(curate=1, snapshot=1, fim_questions=1)),
        ("repotune/shards/packing.py", model_jobs()),
        ("repotune/train/schedule.py", TRAIN_ON),
        (
            "repotune/evaluate/metrics.py",
            {"all": 1, "evaluate": 1, "compare_models": 1, "manifest": 1},
        ),
        ("repotune/evaluate/comparison.py", {"all": 1, "compare_models": 1}),
        ("repotune/manifest/stage.py", {"all": 1, "manifest": 1}),
        ("repotune/manifest/verify.py", {}),  # `make verify`'s module: no stage imports it
        ("repotune/no_stage_imports_me.py", {}),  # a new module
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_edited_module_reruns_the_stages_that_import_it(finished, tmp_path, module, expected):
    repo, workdir = finished
    snakefile = copy_workflow(tmp_path / "workflow")
    command = ("--snakefile", str(snakefile), "-n")
    assert planned_jobs(snakemake(workdir, *command, config=config_of(repo))) == {}
    with open(snakefile.parent / module, "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    assert planned_jobs(snakemake(workdir, *command, config=config_of(repo))) == expected


def test_manifest_records_each_stages_code_hash(finished):
    _, workdir = finished
    manifest = json.loads((workdir / "results" / "tiny" / "manifest.json").read_text())
    hasher = CodeHasher(ROOT)
    stages = (
        "extract_commits", "curate", "snapshot", "fim_questions", "tokenize",
        "train", "evaluate", "export", "manifest",
    )  # fmt: skip
    assert manifest["code"] == {stage: hasher.hash(f"scripts/{stage}.py") for stage in stages}


@pytest.mark.parametrize(
    "change",
    [
        {"train": {"mem_mb": 1234}},
        {"train": {"logging_steps": 1}},
        {"train": {"checkpoint_interval": 1}},
        {"train": {"num_gpus": 0}},
        {"evaluate": {"mem_mb": 1234}},
    ],
    ids=lambda change: ".".join([*change, *next(iter(change.values()))]),
)
def test_bookkeeping_setting_reruns_nothing(finished, change):
    repo, workdir = finished
    section, values = next(iter(change.items()))
    if section == "train":
        config = config_of(repo, train={**FAST["train"], **values})
    else:
        config = config_of(repo, evaluate=values)
    assert dry(workdir, config) == {}


def test_visible_gpu_count_reruns_nothing(finished, tmp_path, monkeypatch):
    repo, workdir = finished
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\necho 'GPU 1: Fake (UUID: GPU-1)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    result = snakemake(workdir, "-n", config=config_of(repo))
    assert planned_jobs(result) == {}
    planned = snakemake(workdir, "-n", "--forcerun", "train", config=config_of(repo))
    assert "gpu=2" in planned.stdout  # the fake GPUs were seen, and only the resources show it


# The README's --config commands, verbatim: nested values arrive as strings and are coerced.
README_COMMANDS = {
    "snakemake --workflow-profile profiles/slurm --config train='{num_gpus: 1}' --use-conda": {},
    ".venv/bin/snakemake --cores 8 --config tokenize='{seq_len: 512}'": model_jobs(),
}


@pytest.mark.parametrize(("line", "expected"), README_COMMANDS.items(), ids=["slurm", "seq_len"])
def test_readme_config_commands_plan_as_typed(finished, line, expected):
    repo, workdir = finished
    assert line in (ROOT / "README.md").read_text()
    words = shlex.split(line)
    config = words[words.index("--config") + 1 : words.index("--config") + 2]
    profile = []
    if "--workflow-profile" in words:
        profile = ["--workflow-profile", str(ROOT / words[words.index("--workflow-profile") + 1])]
    result = snakemake(workdir, "-n", *profile, "--config", *config, config=config_of(repo))
    assert planned_jobs(result) == expected
