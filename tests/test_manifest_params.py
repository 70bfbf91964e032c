"""The manifest's params do not depend on the order the config arrived in, so a bookkeeping key
changed through ``--configfile`` reruns nothing (Snakemake compares the params' ``repr``)."""

import subprocess

import pytest
import yaml

from repotune.config import resolve_config, result_config
from repotune.manifest.params import canonical
from testdata.workflow import BIN, ROOT, planned_jobs


def test_canonical_params_ignore_key_order_but_keep_list_order():
    config = resolve_config({"train": {"mem_mb": 1234}})
    reordered = {key: config[key] for key in reversed(list(config))}
    reordered["train"] = {key: config["train"][key] for key in reversed(list(config["train"]))}
    assert repr(result_config(reordered)) != repr(result_config(config))  # what Snakemake saw
    assert repr(canonical(result_config(reordered))) == repr(canonical(result_config(config)))
    assert canonical({"b": [3, {"y": 1, "x": 2}], "a": (1, 2)}) == {
        "a": [1, 2],
        "b": [3, {"x": 2, "y": 1}],
    }
    assert list(canonical({"b": 1, "a": 2})) == ["a", "b"]


@pytest.mark.slow
def test_mem_mb_through_a_configfile_in_another_order_plans_nothing(shared_run, tmp_path):
    """As a user does it: a config file that names train first, with its mem_mb. Snakemake
    merges config files in order, so train and mem_mb now come first; the manifest holds the
    whole config and must not rerun, nor anything else. (Each section keeps the order the run
    had: the other rules' params hold one section each, in the order it arrived in.)"""
    config = yaml.safe_load(yaml.safe_dump(shared_run.config))  # as the run's file had it
    train = {"mem_mb": 1234, **config.pop("train")}
    configfile = tmp_path / "memory.yaml"
    ordered = {"train": train, **dict(reversed(list(config.items())))}
    configfile.write_text(yaml.safe_dump(ordered, sort_keys=False))
    command = [
        str(BIN / "snakemake"), "--snakefile", str(ROOT / "Snakefile"),
        "--directory", str(shared_run.workdir), "--configfile", str(configfile),
        "--cores", "2", "-n",
    ]  # fmt: skip
    assert planned_jobs(subprocess.run(command, capture_output=True, text=True)) == {}
