"""The train stage end to end on CPU: tiny GPT-2 from config, fixture shards and tokenizer."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from repotune.config import resolve_config
from repotune.errors import InputError
from repotune.modeling import load_adapted
from repotune.train import checkpoint
from repotune.train.trainer import Hooks, TrainRequest, train
from testdata.training import TrainInputs, write_inputs

TINY = {"preset": "tiny", "architecture": {"n_layer": 2, "n_head": 2, "n_embd": 64}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> TrainInputs:
    return write_inputs(tmp_path_factory.mktemp("results"))


def request(inputs: TrainInputs, out: Path, **settings: object) -> TrainRequest:
    config = resolve_config({"train": {"logging_steps": 2, "eval_interval": 0, **settings}})
    return TrainRequest(
        # The preset's CPU schedule (one epoch) would end the fixture's runs after a few steps.
        model={**TINY, "train": {"learning_rate": 0.01, "max_epochs": 20}},
        shards_dir=str(inputs.shards),
        tokenizer_dir=str(inputs.tokenizer),
        adapter_dir=str(out / "adapter"),
        base_dir=str(out / "base"),
        state_dir=str(out / "train_state"),
        settings=config["train"],
    )


def log_rows(adapter: Path) -> list[dict[str, str]]:
    with open(adapter / "training_log.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sample_batch(inputs: TrainInputs) -> torch.Tensor:
    import datasets

    rows = datasets.load_from_disk(str(inputs.shards / "validation"))[:2]["input_ids"]
    return torch.tensor(rows, dtype=torch.long)


@pytest.mark.slow
def test_fp32_training_learns_and_reloads_with_same_logits(inputs, tmp_path):
    ids = sample_batch(inputs)
    seen: dict[str, torch.Tensor] = {}

    def remember(model: torch.nn.Module) -> None:
        model.eval()
        with torch.no_grad():
            seen["logits"] = model(input_ids=ids).logits

    summary = train(
        request(inputs, tmp_path, max_steps=24, eval_interval=12), Hooks(on_trained=remember)
    )
    adapter = tmp_path / "adapter"
    rows = log_rows(adapter)
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.2
    val = [float(row["val_loss"]) for row in rows if row["val_loss"]]
    assert len(val) == 2 and val[1] < val[0]
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"):
        assert (adapter / name).is_file(), name
    written = json.loads((adapter / "training_summary.json").read_text())
    assert written["steps"] == summary["steps"] == 24
    # The epoch is what the steps drew (24 steps of 8 blocks), a fraction of the training
    # split, never the planned whole number the step cap cut short.
    assert written["blocks_drawn"] == 24 * 8
    assert written["epochs"] == round(24 * 8 / written["train_blocks"], 4)
    assert f"{written['epochs']} of an epoch" in (adapter / "README.md").read_text()
    assert written["resolved_targets"] == ["c_attn", "c_proj", "c_fc"]
    # LoRA on 2 GPT-2 blocks of width 64, r=16: c_attn 64->192, attn c_proj 64->64, c_fc 64->256,
    # mlp c_proj 256->64, each r * (in + out); the random base's token embedding, LM head (300
    # tokens each) and position embedding (64 positions) are trained in full.
    assert (
        written["trainable_params"]
        == 2 * 16 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64)) + (300 + 300 + 64) * 64
    )
    assert written["trained_in_full"] == ["transformer.wte", "transformer.wpe", "lm_head"]
    assert written["base_training"].startswith("untrained (random initialisation)")
    assert (written["dtype"], written["quantization"]) == ("fp32", "none")
    assert "final validation loss" in (adapter / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(base, str(adapter / "last")).eval()
    untouched = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, seen["logits"])
        # The adapter switched off is the saved base: loading the trained embeddings did not
        # overwrite the base's own (evaluation's "base" rows rest on this).
        with reloaded.disable_adapter():
            assert torch.equal(reloaded(input_ids=ids).logits, untouched(input_ids=ids).logits)
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(tmp_path / "base")


@pytest.mark.slow
def test_nf4_on_cpu_trains_and_loads_for_evaluation(inputs, tmp_path):
    summary = train(request(inputs, tmp_path, quantization="nf4", max_steps=16, eval_interval=8))
    assert summary["quantization"] == "nf4" and summary["gradient_checkpointing"] is True
    rows = log_rows(tmp_path / "adapter")
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.1
    model = load_adapted(tmp_path / "adapter")
    assert (
        type(model.base_model.model.transformer.h[0].attn.c_attn.base_layer).__name__
        == "Linear4bit"
    )
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=sample_batch(inputs)).logits).all()


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_adapter(inputs, tmp_path):
    settings = {"max_steps": 9, "checkpoint_interval": 2, "eval_interval": 4, "lora_dropout": 0.1}
    whole = tmp_path / "whole"
    train(request(inputs, whole, **settings))
    parts = tmp_path / "parts"
    assert train(request(inputs, parts, **settings), Hooks(stop_after_steps=5)) is None
    assert not (parts / "adapter").exists()
    assert json.loads((parts / "train_state/checkpoint/state.json").read_text())["step"] == 5
    train(request(inputs, parts, **settings))
    for name in ("adapter_model.safetensors", "last/adapter_model.safetensors"):
        expected, got = load_file(whole / "adapter" / name), load_file(parts / "adapter" / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), key
    assert [row["step"] for row in log_rows(parts / "adapter")] == [
        row["step"] for row in log_rows(whole / "adapter")
    ]


@pytest.mark.slow
def test_full_training_updates_every_weight_and_resumes_to_the_same_model(inputs, tmp_path):
    """``method: full`` (the pretrained base, repotune.pretrain): no adapter, every parameter
    trained, checkpointed and restored with its optimizer state."""
    settings = {"max_steps": 4, "checkpoint_interval": 2, "eval_max_blocks": 2}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    summary = train(
        TrainRequest(**{**request(inputs, whole, **settings).__dict__, "method": "full"})
    )
    assert summary["method"] == "full" and summary["resolved_targets"] == []
    model = AutoModelForCausalLM.from_pretrained(whole / "adapter")  # a plain model, no peft
    assert summary["trainable_params"] == sum(p.numel() for p in model.parameters())
    initial = load_file(whole / "base" / "model.safetensors")
    trained = load_file(whole / "adapter" / "last" / "model.safetensors")
    assert all(not torch.equal(initial[key], trained[key]) for key in initial)
    interrupted = TrainRequest(**{**request(inputs, parts, **settings).__dict__, "method": "full"})
    assert train(interrupted, Hooks(stop_after_steps=2)) is None
    train(interrupted)
    resumed = load_file(parts / "adapter" / "last" / "model.safetensors")
    assert trained.keys() == resumed.keys()
    assert all(torch.equal(trained[key], resumed[key]) for key in trained)


# Trains in a child process that SIGKILLs itself before the forward pass of step ``argv[2]``:
# a hard kill at a known point after a checkpoint, a validation and log rows exist.
KILLED_AT = """
import json, os, signal, sys
from repotune.train.trainer import Hooks, TrainRequest, train

def die(step, micro):
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

train(TrainRequest(**json.loads(open(sys.argv[1]).read())), Hooks(before_micro_batch=die))
"""


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_a_rerun_equals_an_uninterrupted_run(inputs, tmp_path):
    settings = {
        "max_steps": 9, "checkpoint_interval": 3, "eval_interval": 4, "lora_dropout": 0.1,
    }  # fmt: skip
    whole = tmp_path / "whole"
    train(request(inputs, whole, **settings))
    parts = tmp_path / "parts"
    killed = request(inputs, parts, **settings)
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(killed.__dict__), encoding="utf-8")
    root = Path(__file__).resolve().parent.parent
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AT, str(request_file), "5"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, check=False,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    state = parts / "train_state"
    # Killed in step 6: the checkpoint of step 3 exists, and so do the step-4 validation's
    # best adapter and log rows past the checkpoint, which the rerun must not trust.
    assert json.loads((state / "checkpoint/state.json").read_text())["step"] == 3
    assert (state / "best").is_dir() and not (parts / "adapter").exists()
    assert [row["step"] for row in log_rows(state)] == ["2", "4"]
    train(request(inputs, parts, **settings))
    for name in ("adapter_model.safetensors", "last/adapter_model.safetensors"):
        expected, got = load_file(whole / "adapter" / name), load_file(parts / "adapter" / name)
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), key
    assert log_rows(parts / "adapter") == [
        {
            **row,
            "tokens_per_s": got_row["tokens_per_s"],
            "peak_memory_mb": got_row["peak_memory_mb"],
        }
        for row, got_row in zip(
            log_rows(whole / "adapter"), log_rows(parts / "adapter"), strict=True
        )
    ]


def test_changed_training_config_starts_fresh():
    settings = resolve_config({})["train"]
    context = {"model": "tiny", "train": "abc"}
    same = checkpoint.config_hash(settings, context)
    assert checkpoint.config_hash({**settings, "micro_batch_size": 2}, context) == same
    assert checkpoint.config_hash({**settings, "learning_rate": 1e-3}, context) != same
    assert checkpoint.config_hash(settings, {**context, "train": "abd"}) != same


@pytest.mark.slow
def test_simulated_oom_halves_micro_batch_and_continues(inputs, tmp_path, caplog):
    raised: list[int] = []

    def oom_once(step: int, micro: int) -> None:
        if step == 2 and micro == 4 and not raised:
            raised.append(step)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    summary = train(
        request(inputs, tmp_path, max_steps=5, micro_batch_size=4, checkpoint_interval=1),
        Hooks(before_micro_batch=oom_once),
    )
    assert raised == [2]
    assert (summary["micro_batch"], summary["accumulation"], summary["oom_backoffs"]) == (2, 4, 1)
    assert "out of memory at micro-batch 4" in caplog.text
    rows = log_rows(tmp_path / "adapter")
    assert [int(row["step"]) for row in rows] == [2, 4, 5]
    assert rows[0]["micro_batch"] == "4" and rows[-1]["micro_batch"] == "2"


def test_unknown_train_key_in_model_entry_is_an_input_error(inputs, tmp_path):
    bad = request(inputs, tmp_path)
    bad = TrainRequest(**{**bad.__dict__, "model": {**TINY, "train": {"lora_rank": 4}}})
    with pytest.raises(InputError, match="lora_rank"):
        train(bad)


def test_missing_shards_are_an_input_error(inputs, tmp_path):
    shutil.copytree(inputs.shards, tmp_path / "shards")
    shutil.rmtree(tmp_path / "shards" / "validation")
    bad = TrainRequest(
        **{**request(inputs, tmp_path).__dict__, "shards_dir": str(tmp_path / "shards")}
    )
    with pytest.raises(InputError, match="rerun the tokenize rule"):
        train(bad)
