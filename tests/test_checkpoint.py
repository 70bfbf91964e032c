"""Checkpoints on disk without training a model: what resume relies on, piece by piece."""

import json
import random
from pathlib import Path

import numpy as np
import torch

from repotune.config import resolve_config
from repotune.train import checkpoint


def optimizer_and_scheduler() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """A real AdamW and schedule, stepped twice so both carry state worth restoring."""
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(2):
        layer(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def draws() -> tuple[list[float], list[float], list[float]]:
    """The next numbers from each generator training uses."""
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_a_saved_checkpoint_loads_back_whole(tmp_path: Path) -> None:
    optimizer, scheduler = optimizer_and_scheduler()
    # A transposed tensor is not contiguous; safetensors only stores contiguous ones.
    adapter = {"lora_A": torch.arange(6.0).reshape(2, 3).t(), "lora_B": torch.ones(2)}
    state = {"config_hash": "abc", "step": 7, "best_loss": 1.25}
    checkpoint.save(
        tmp_path / "checkpoint", adapter, optimizer.state_dict(), scheduler.state_dict(), state
    )
    loaded = checkpoint.load(tmp_path / "checkpoint", "abc")
    assert loaded is not None
    assert loaded["state"] == state
    assert loaded.keys() == {"state", "adapter", "optimizer", "scheduler", "rng"}
    assert loaded["adapter"].keys() == adapter.keys()
    for key, tensor in adapter.items():
        assert torch.equal(loaded["adapter"][key], tensor)
    fresh_optimizer, fresh_scheduler = optimizer_and_scheduler()
    fresh_optimizer.load_state_dict(loaded["optimizer"])
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    assert fresh_scheduler.last_epoch == scheduler.last_epoch == 2
    saved_moments = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], saved_moments)
    # state.json is for a person too: indented JSON.
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text()) == state
    assert "\n  " in (tmp_path / "checkpoint" / "state.json").read_text()


def test_restored_random_state_repeats_the_draws_after_the_save(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    optimizer, scheduler = optimizer_and_scheduler()
    checkpoint.save(
        tmp_path / "checkpoint",
        {"w": torch.zeros(1)},
        optimizer.state_dict(),
        scheduler.state_dict(),
        {"config_hash": "h"},
    )
    after_save = draws()
    draws()  # the interrupted run went on drawing
    loaded = checkpoint.load(tmp_path / "checkpoint", "h")
    assert loaded is not None
    checkpoint.set_rng_state(loaded["rng"])
    assert draws() == after_save


def test_a_second_save_replaces_the_first(tmp_path: Path) -> None:
    optimizer, scheduler = optimizer_and_scheduler()
    for step in (1, 2):
        checkpoint.save(
            tmp_path / "checkpoint",
            {"w": torch.full((2,), float(step))},
            optimizer.state_dict(),
            scheduler.state_dict(),
            {"config_hash": "h", "step": step},
        )
    loaded = checkpoint.load(tmp_path / "checkpoint", "h")
    assert loaded is not None
    assert loaded["state"]["step"] == 2
    assert loaded["adapter"]["w"].tolist() == [2.0, 2.0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint"]


def test_no_checkpoint_or_another_configs_checkpoint_loads_as_none(tmp_path: Path) -> None:
    assert checkpoint.load(tmp_path / "checkpoint", "h") is None
    (tmp_path / "checkpoint").mkdir()
    assert checkpoint.load(tmp_path / "checkpoint", "h") is None
    optimizer, scheduler = optimizer_and_scheduler()
    checkpoint.save(
        tmp_path / "checkpoint",
        {"w": torch.zeros(1)},
        optimizer.state_dict(),
        scheduler.state_dict(),
        {"config_hash": "old"},
    )
    assert checkpoint.load(tmp_path / "checkpoint", "new") is None
    assert checkpoint.load(tmp_path / "checkpoint", "old") is not None


def test_reset_empties_an_old_state_directory_and_makes_a_missing_one(tmp_path: Path) -> None:
    state_dir = tmp_path / "model" / "train_state"
    checkpoint.reset(state_dir)
    assert state_dir.is_dir()
    (state_dir / "checkpoint").mkdir()
    (state_dir / "training_log.csv").write_text("step,loss\n")
    checkpoint.reset(state_dir)
    assert state_dir.is_dir()
    assert list(state_dir.iterdir()) == []


def test_config_hash_ignores_key_order_and_hashes_paths_by_value() -> None:
    settings = resolve_config({})["train"]
    context = {"model": "tiny", "train": Path("results/tiny/shards")}
    same = checkpoint.config_hash(settings, context)
    assert len(same) == 64
    reordered = dict(reversed(list(settings.items())))
    assert checkpoint.config_hash(reordered, dict(reversed(list(context.items())))) == same
    assert checkpoint.config_hash(settings, {**context, "train": Path("elsewhere")}) != same
    # The settings and the context are hashed apart: a key cannot move between them unnoticed.
    moved = {key: value for key, value in settings.items() if key != "learning_rate"}
    moved_context = {**context, "learning_rate": settings["learning_rate"]}
    assert checkpoint.config_hash(moved, moved_context) != same
