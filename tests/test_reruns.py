"""Only stale steps rerun: dry runs on the session's finished run plan exactly the stale jobs.

Dry runs change nothing, so they all plan on the shared run (tests/conftest.py); a new commit
(a real rerun) is tested on a copy in tests/test_workflow.py.
"""

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from repotune.codehash import CodeHasher
from testdata.workflow import (
    FAST,
    ROOT,
    all_jobs,
    copy_workflow,
    data_repository,
    model_jobs,
    planned_jobs,
    snakemake,
)
from tests.test_docs import documented_commands

pytestmark = pytest.mark.slow
MODEL = FAST["models"][0]
TRAIN_ON = {"all": 1, "train": 1, "evaluate": 1, "compare_models": 1, "export": 1, "manifest": 1}


def config_of(run, evaluate=None, **overrides):
    """The run's config with top-level keys replaced; ``evaluate`` keys join its own (the
    behavioural tests by an absolute path, so a copied workflow reads the very same file)."""
    config = run.config
    return {**config, "evaluate": {**config["evaluate"], **(evaluate or {})}, **overrides}


def dry(run, config, *args):
    return planned_jobs(snakemake(run.workdir, "-n", *args, config=config))


@pytest.mark.documented(".venv/bin/snakemake -n")
def test_nothing_changed_plans_nothing(shared_run):
    assert dry(shared_run, config_of(shared_run)) == {}


@pytest.mark.parametrize(
    "change",
    [
        {"tokenize": {"seq_len": 48}},
        {"models": [{**MODEL, "template": "starcoder"}]},
    ],
    ids=["seq_len", "template"],
)
def test_tokenization_change_reruns_from_tokenize(shared_run, change):
    assert dry(shared_run, config_of(shared_run, **change)) == model_jobs()


def test_evaluation_setting_reruns_evaluate_and_manifest_only(shared_run):
    jobs = dry(shared_run, config_of(shared_run, evaluate={"examples": 3}))
    assert jobs == {"all": 1, "evaluate": 1, "compare_models": 1, "manifest": 1}


def test_second_model_adds_only_its_own_jobs(shared_run):
    second = {**MODEL, "name": "tiny2"}
    jobs = dry(shared_run, config_of(shared_run, models=[MODEL, second]))
    assert jobs == model_jobs()  # one of each: tiny's own jobs are not planned again


@pytest.fixture(scope="module")
def copied_workflow(shared_run, tmp_path_factory):
    """A copy of the workflow that plans nothing on the shared run, checked once: copying
    changes nothing, so what an edit to a copy of this copy plans is the edit's doing."""
    snakefile = copy_workflow(tmp_path_factory.mktemp("workflow"))
    assert dry(shared_run, config_of(shared_run), "--snakefile", str(snakefile)) == {}
    return snakefile.parent


def edited_plan(run, workflow, tmp_path, path):
    """The plan on ``run`` of a copy of ``workflow`` (mtimes kept) with ``path`` edited."""
    edited = tmp_path / "workflow"
    shutil.copytree(workflow, edited, ignore=shutil.ignore_patterns("__pycache__"))
    with open(edited / path, "a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    return dry(run, config_of(run), "--snakefile", str(edited / "Snakefile"))


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("curate.py", model_jobs(curate=1, snapshot=1, fim_questions=1)),
        ("snapshot.py", model_jobs(snapshot=1)),  # the files feed tokenize
        ("tokenize.py", model_jobs()),
        ("manifest.py", {"all": 1, "manifest": 1}),
    ],
)
def test_edited_script_reruns_its_rule_and_what_follows(
    shared_run, copied_workflow, tmp_path, script, expected
):
    assert edited_plan(shared_run, copied_workflow, tmp_path, f"scripts/{script}") == expected


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
def test_edited_module_reruns_the_stages_that_import_it(
    shared_run, copied_workflow, tmp_path, module, expected
):
    assert edited_plan(shared_run, copied_workflow, tmp_path, module) == expected


def test_manifest_records_each_stages_code_hash(shared_run):
    manifest = json.loads((shared_run.results / "tiny" / "manifest.json").read_text())
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
def test_bookkeeping_setting_reruns_nothing(shared_run, change):
    section, values = next(iter(change.items()))
    if section == "train":
        config = config_of(shared_run, train={**FAST["train"], **values})
    else:
        config = config_of(shared_run, evaluate=values)
    assert dry(shared_run, config) == {}


def test_visible_gpu_count_reruns_nothing(shared_run, tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-0)'\necho 'GPU 1: Fake (UUID: GPU-1)'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert dry(shared_run, config_of(shared_run)) == {}
    planned = snakemake(
        shared_run.workdir, "-n", "--forcerun", "train", config=config_of(shared_run)
    )
    assert "gpu=2" in planned.stdout  # the fake GPUs were seen, and only the resources show it


# The workflow commands the docs show, run as shown (as dry runs on the shared run), with the plan
# each must make. A placeholder is replaced by a fixture: another repository, a config file.
EVALUATE_ONLY = {"all": 1, "evaluate": 1, "compare_models": 1, "manifest": 1}
WORKFLOW_COMMANDS = {
    ".venv/bin/snakemake --cores 8 --config repo=/path/to/your/repo": all_jobs(),
    ".venv/bin/snakemake --cores 8 --configfile my-run.yaml": EVALUATE_ONLY,
    ".venv/bin/snakemake --cores 8 --config tokenize='{seq_len: 512}'": model_jobs(),
    ".venv/bin/snakemake --cores 8 --config "
    """'evaluate={"behaviour":{"allow_code_execution":true}}'""": EVALUATE_ONLY,
    ".venv/bin/snakemake --workflow-profile profiles/slurm --config train='{num_gpus: 1}'": {},
}


@pytest.mark.documented(*WORKFLOW_COMMANDS)
@pytest.mark.parametrize(
    ("line", "expected"),
    WORKFLOW_COMMANDS.items(),
    ids=["repo", "configfile", "seq_len", "allow_code_execution", "slurm"],
)
def test_documented_workflow_commands_plan_as_shown(shared_run, tmp_path, line, expected):
    """Nested --config values arrive as strings and are coerced; --config repo= reaches the
    plan (another repository plans everything); --configfile replaces the run's config file."""
    assert line in documented_commands()
    fixtures = {
        "/path/to/your/repo": lambda: data_repository(tmp_path / "repo").path,
        "my-run.yaml": lambda: write_yaml(
            tmp_path / "my-run.yaml", config_of(shared_run, evaluate={"examples": 3})
        ),
        "profiles/slurm": lambda: ROOT / "profiles" / "slurm",
    }
    words = shlex.split(line)[1:]
    for placeholder, fixture in fixtures.items():
        if placeholder in line:
            words = [word.replace(placeholder, str(fixture())) for word in words]
    assert dry(shared_run, config_of(shared_run), *words) == expected


def write_yaml(path: Path, data: dict) -> Path:
    """``data`` as a YAML config file at ``path``."""
    path.write_text(yaml.safe_dump(data))
    return path
