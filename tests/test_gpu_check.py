"""benchmarks/gpu_check.py's dry run: every part on tiny shapes on the CPU, as a GPU run would."""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from testdata.workflow import planned_jobs


@pytest.mark.slow
def test_dry_run_runs_every_part_and_reports_them(tmp_path, monkeypatch):
    """Every part but ``workflow`` through the command line's entry point, each in its own
    process as on a GPU. The workflow part's snakemake run is the shared finished run's
    (tests/conftest.py): the two tests below check its command and its checks."""
    out = tmp_path / "gpu"
    parts = [name for name in gpu_check.PARTS if name != "workflow"]
    argv = ["gpu_check", "--dry-run", "--out", str(out), "--parts", ",".join(parts)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_status:
        gpu_check.main()
    report = json.loads((out / "gpu_check.json").read_text())
    parts = report["parts"]
    failed = {name: part for name, part in parts.items() if part["status"] != "ok"}
    assert not failed and exit_status.value.code == 0, (
        failed,
        (out / "gpu_check.log").read_text()[-4000:],
    )
    assert report["dry_run"] is True
    # The training parts trained what they say, and report speed and memory beside the estimate.
    assert parts["train_starcoder2_nf4"]["quantization"] == "nf4"
    assert parts["train_starcoder2_bf16"]["quantization"] == "none"
    assert parts["train_starcoder2_bf16"]["dtype"] == "bf16"
    for name in ("train_gpt2_medium_fp16", "train_starcoder2_nf4", "train_starcoder2_bf16"):
        part = parts[name]
        assert part["tokens_per_s"] > 0 and part["estimate_mb"] > 0 and part["max_rss_mb"] > 0
        assert part["micro_batch"] * part["accumulation"] == 4  # the dry run's batch
    # The back-off: a too-large micro-batch shrank, and after the checkpoint it shrank again,
    # resumed at the checkpoint's step and logged every step once.
    oom = parts["oom_backoff"]
    assert oom["micro_batch_after_first_oom"] < oom["requested_micro_batch"]
    assert oom["backoffs_after_resume"] >= 1
    assert oom["micro_batch_after_resume"] < oom["micro_batch_after_first_oom"]
    assert oom["logged_steps"] == list(range(1, oom["steps"] + 1))
    # CUDA-only: paged 8-bit AdamW is refused on a CPU; int8 loads, trains and reloads.
    assert "needs a CUDA GPU" in parts["paged_adamw_int8"]["paged_adamw_8bit"]["refused_on_cpu"]
    assert parts["paged_adamw_int8"]["int8"]["reloaded_logits_finite"] is True
    assert parts["generation"]["generated_tokens"] > 0
    table = (out / "gpu_check.md").read_text()
    assert "| train_starcoder2_nf4 | ok |" in table and "**oom_backoff**: ok" in table


@pytest.mark.slow
def test_the_workflow_part_checks_the_devices_and_the_manifest_of_a_finished_run(shared_run):
    """The checks the workflow part makes after its snakemake run, on the shared run (trained
    and evaluated where the dry run's run would be, the CPU on a machine without a GPU): they
    pass expecting that device and fail expecting the other."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    result = gpu_check.workflow_checks(shared_run.workdir, cuda=cuda)
    assert result["train_device"] == device and result["evaluate_device"].startswith(device)
    assert result["manifest_verifies"] is True
    with pytest.raises(RuntimeError, match="a verified manifest"):
        gpu_check.workflow_checks(shared_run.workdir, cuda=not cuda)


def test_the_workflow_part_runs_a_workflow_that_trains_and_evaluates(tmp_path):
    """Its repository, config and command as they are, planned by snakemake: the config passes
    the schema and the run would train and evaluate the tiny model."""
    command = gpu_check.workflow_command(tmp_path / "workflow")
    jobs = planned_jobs(subprocess.run([*command, "--dry-run"], capture_output=True, text=True))
    assert jobs["train"] == 1 and jobs["evaluate"] == 1 and jobs["manifest"] == 1


@pytest.mark.slow
def test_a_part_that_times_out_is_recorded_and_the_next_still_runs(tmp_path, monkeypatch):
    """``workflow`` gets half a second (its snakemake run cannot even start in that time);
    ``generation`` then runs as usual, and both land in the JSON and the table."""
    function, gpu_timeout, _ = gpu_check.PARTS["workflow"]
    monkeypatch.setitem(gpu_check.PARTS, "workflow", (function, gpu_timeout, 0.5))
    report = gpu_check.run_all(tmp_path, ["workflow", "generation"], dry_run=True, budget=600)
    assert report["parts"]["workflow"]["status"] == "timeout"
    assert report["parts"]["generation"]["status"] == "ok", (tmp_path / "gpu_check.log").read_text()
    assert json.loads((tmp_path / "gpu_check.json").read_text())["parts"] == report["parts"]
    assert "**workflow**: timeout" in (tmp_path / "gpu_check.md").read_text()


def test_a_failing_part_writes_its_error_instead_of_a_result(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("the card caught fire")

    monkeypatch.setitem(gpu_check.PARTS, "broken", (broken, 1, 1))
    gpu_check.run_part("broken", tmp_path, True, tmp_path / "broken.json")
    record = json.loads((tmp_path / "broken.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == "RuntimeError: the card caught fire"
