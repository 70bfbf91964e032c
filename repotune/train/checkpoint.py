"""Training state on disk: resume after any interruption, kill -9 included.

``results/{model}/train_state/`` is deliberately not a declared output: Snakemake deletes a
failed job's outputs, and the point of a checkpoint is to outlive a failed job. It holds
``checkpoint/`` (the last one; written to a temporary sibling and renamed, so it is complete
or absent), ``best/`` (the adapter with the lowest validation loss so far) and the running
``training_log.csv``.

A checkpoint carries the hash of everything that determines the trained weights (training
settings, model entry, shard fingerprints); a run whose hash differs starts fresh. Settings
that only change speed or bookkeeping (micro-batch, memory budget, GPU count, log and
checkpoint intervals) are left out, so changing them keeps the checkpoint.
"""

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from repotune.atomic import atomic_path
from repotune.config import bookkeeping_keys

# Settings that change speed or bookkeeping, not the weights: marked x-bookkeeping in
# config/schema.yaml, which also keeps them out of the train rule's params.
NOT_HASHED = bookkeeping_keys("train")


def config_hash(settings: dict[str, Any], context: dict[str, Any]) -> str:
    """sha256 over the settings that shape the weights plus ``context`` (model, data)."""
    kept = {key: value for key, value in settings.items() if key not in NOT_HASHED}
    payload = json.dumps({"settings": kept, "context": context}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def rng_state() -> dict[str, Any]:
    """Every random generator training touches."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(
    directory: Path,
    adapter: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    scheduler: dict[str, Any],
    state: dict[str, Any],
) -> None:
    """Write one checkpoint atomically: adapter tensors, optimizer, scheduler, RNG, ``state``."""
    with atomic_path(directory) as temporary:
        temporary.mkdir()
        save_file(
            {key: value.contiguous() for key, value in adapter.items()},
            temporary / "adapter.safetensors",
        )
        torch.save(
            {"optimizer": optimizer, "scheduler": scheduler, "rng": rng_state()},
            temporary / "training.pt",
        )
        (temporary / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")


def load(directory: Path, expected_hash: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` if it exists and matches ``expected_hash``, else None."""
    state_file = directory / "state.json"
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state.get("config_hash") != expected_hash:
        return None
    # The file is our own, written by save(); it holds numpy RNG state, hence weights_only=False.
    training = torch.load(directory / "training.pt", weights_only=False)
    return {
        "state": state,
        "adapter": load_file(directory / "adapter.safetensors"),
        **training,
    }


def reset(state_dir: Path) -> None:
    """Forget a previous run's state (its settings differ)."""
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
