"""A finished run: where ``results/`` is, which model, and the model loaded as it was trained.

Every subcommand of ``repotune`` starts here. A run is *finished* for a model when training has
written ``results/{model}/adapter/training_summary.json`` and tokenize has written the
tokenizer and ``shards/stats.json`` (its run record: the template, block length, FIM format and
stop strings the model was trained with, :class:`repotune.inference.record.RunRecord`). Paths
recorded by the workflow are relative to the directory Snakemake ran in, which is the parent of
``results/``; loading resolves them from there, so the command works from any directory, the
user's own repository included.
"""

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repotune.errors import InputError
from repotune.inference.record import RunRecord

EMPTY_EXIT = 3
"""Exit status of ``suggest`` and ``complete`` when the model's answer is empty."""
RESULTS_ENV = "REPOTUNE_RESULTS"
DEFAULT_RESULTS = "results"
_FINISH = "run the workflow first (`make run`), or point --results (or $REPOTUNE_RESULTS) at one"


def results_dir(option: str | None) -> Path:
    """``--results``, else ``$REPOTUNE_RESULTS``, else ``./results``, as an absolute path."""
    chosen = option or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class FinishedRun:
    """One model's finished run under ``results``."""

    results: Path
    model: str

    @property
    def root(self) -> Path:
        return self.results / self.model

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    def record(self) -> RunRecord:
        """What the model was trained with (tokenize's run record in stats.json)."""
        return RunRecord.read(self.root / "shards" / "stats.json")

    def curate_settings(self) -> dict[str, Any] | None:
        """The curate stage's settings (its file filters among them), None when absent."""
        path = self.results / "dataset" / "curation.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["settings"]


def _is_finished(model_dir: Path) -> bool:
    return (
        (model_dir / "adapter" / "training_summary.json").is_file()
        and (model_dir / "tokenizer").is_dir()
        and (model_dir / "shards" / "stats.json").is_file()
    )


def finished_models(results: Path) -> list[str]:
    """Names of the models with a finished run under ``results``, sorted."""
    if not results.is_dir():
        return []
    return sorted(child.name for child in results.iterdir() if _is_finished(child))


def find_run(results: Path, model: str | None) -> FinishedRun:
    """The finished run of ``model`` (the only one when None); one-line errors otherwise."""
    if not results.is_dir():
        raise InputError(f"results directory '{results}'", "does not exist", _FINISH)
    names = finished_models(results)
    if not names:
        raise InputError(
            f"results directory '{results}'", "holds no finished run (no trained adapter)", _FINISH
        )
    if model is None:
        if len(names) > 1:
            raise InputError(
                f"results directory '{results}'",
                f"holds several models ({', '.join(names)})",
                "choose one with --model",
            )
        return FinishedRun(results, names[0])
    if model not in names:
        raise InputError(
            f"model '{model}'",
            f"has no finished run in '{results}' (finished: {', '.join(names)})",
            "choose one of those with --model, or train it with `make run`",
        )
    return FinishedRun(results, model)


@dataclass
class LoadedModel:
    """Base + adapter, its tokenizer and the run record it is asked by."""

    model: Any
    tokenizer: Any
    record: RunRecord


def empty_answer(what: str) -> int:
    """Say on stderr, in one line, that the model answered with nothing; :data:`EMPTY_EXIT`.

    An empty line on stdout with exit 0 reads as success; a script or editor must be able to
    tell "no suggestion" from a suggestion.
    """
    print(
        f"repotune: the model produced no {what} (its answer was empty); "
        "write it yourself, or retrain (see the run's eval/report.md)",
        file=sys.stderr,
    )
    return EMPTY_EXIT


def pick_device(requested: str) -> str:
    """``auto``: the first CUDA GPU when one is visible, else the CPU."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load(run: FinishedRun, device: str = "auto") -> LoadedModel:
    """Load the run's base model with its adapter (repotune.modeling.load_adapted)."""
    from transformers.utils import logging as transformers_logging

    from repotune.modeling import load_adapted
    from repotune.shards.tokenizer import load_tokenizer

    transformers_logging.disable_progress_bar()
    record = run.record()
    tokenizer = load_tokenizer(str(run.tokenizer))
    with contextlib.chdir(run.results.parent):
        model = load_adapted(run.adapter, device=pick_device(device))
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, record=record)
