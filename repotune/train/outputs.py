"""The train stage's output: the adapter directory, written atomically in one piece.

It holds the adapter with the lowest validation loss at the top (the last one when nothing was
validated), ``last/`` (the adapter after the final step; for ``method: full`` the whole model
instead of an adapter, both times), the tokenizer, ``training_log.csv``,
``training_summary.json`` (what evaluation and the manifest read) and the model card.
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from repotune.adapter_files import SUMMARY_FILE
from repotune.atomic import atomic_path
from repotune.hardware import dtype_name
from repotune.modeling import base_source
from repotune.train import trained, training_log
from repotune.train.model_card import model_card
from repotune.train.run import Progress, Run, Session

log = logging.getLogger("repotune.train")
BUILT_BASE_NOTE = "untrained (random initialisation); embeddings trained with the adapter"
FULL_NOTE = "random initialisation; every parameter trained (pretrained here)"


def summary(run: Run, session: Session, progress: Progress, backoffs: int) -> dict[str, Any]:
    """``training_summary.json``: what was trained, on what, how, and how well."""
    adapted, plan = session.adapted, session.plan
    return {
        "model": run.spec.name,
        "base_model": base_source(run.request.base_dir),
        "steps": progress.step,
        "epochs": run.epochs_at(progress.step),
        "epochs_planned": run.epochs,
        "blocks_drawn": progress.step * run.effective_batch,
        "tokens": progress.tokens,
        "train_blocks": len(run.train),
        "train_tokens": run.train.tokens,
        "validation_blocks": len(run.validation),
        "seq_len": run.train.seq_len,
        "final_train_loss": training_log.last_train_loss(run.state_dir),
        "final_val_loss": training_log.last_val_loss(run.state_dir),
        "best_val_loss": progress.best_val_loss,
        "best_step": progress.best_step,
        "adapter": "best" if progress.best_step is not None else "last",
        "tokens_per_s": round(progress.tokens / max(progress.seconds, 1e-9), 1),
        "train_seconds": round(progress.seconds, 1),
        "method": run.request.method,
        "base_training": _base_training(run),
        "resolved_targets": adapted.targets,
        "trained_in_full": adapted.trained_in_full,
        "trainable_params": adapted.trainable_params,
        "dtype": dtype_name(run.dtype),
        "quantization": run.settings.quantization,
        "gradient_checkpointing": adapted.gradient_checkpointing,
        "micro_batch": plan.micro_batch,
        "accumulation": plan.accumulation,
        "world_size": run.world,
        "effective_batch": plan.micro_batch * plan.accumulation * run.world,
        "oom_backoffs": backoffs,
        "memory_estimate_bytes": plan.memory_estimate,
        "hardware": run.hardware.as_dict(),
        "settings": run.settings.raw,
    }


def _base_training(run: Run) -> str:
    if run.request.method == trained.FULL:
        return FULL_NOTE
    return BUILT_BASE_NOTE if run.spec.base is None else "pretrained"


def write(run: Run, session: Session, progress: Progress, backoffs: int) -> dict[str, Any]:
    """Write the adapter directory; return its summary."""
    facts = summary(run, session, progress, backoffs)
    with atomic_path(run.request.adapter_dir) as temporary:
        session.model.save_pretrained(temporary / "last")
        best = run.state_dir / "best"
        source = best if progress.best_step is not None and best.is_dir() else temporary / "last"
        for item in source.iterdir():
            shutil.copy2(item, temporary / item.name)
        if run.request.method == trained.LORA:
            _point_at_base(temporary, facts["base_model"])
            _point_at_base(temporary / "last", facts["base_model"])
        run.tokenizer.save_pretrained(temporary)
        shutil.copy2(run.state_dir / training_log.FILE, temporary / training_log.FILE)
        (temporary / SUMMARY_FILE).write_text(json.dumps(facts, indent=2) + "\n", "utf-8")
        (temporary / "README.md").write_text(model_card(facts), encoding="utf-8")
    log.info("adapter written to %s: %s", run.request.adapter_dir, json.dumps(facts)[:400])
    return facts


def _point_at_base(adapter_dir: Path, base: str) -> None:
    """Record the base every adapter was trained on in its adapter_config.json.

    peft keeps target_modules as a set, whose order changes with PYTHONHASHSEED; sorting it
    makes the file byte-identical across identical runs.
    """
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
