"""A finished run: where ``results/`` is, which model, and the model loaded as it was trained.

Every subcommand of ``repotune`` starts here. A run is *finished* for a model when training has
written ``results/{model}/adapter/training_summary.json`` and tokenize has written the
tokenizer and ``shards/stats.json`` (its run record: the template, block length, FIM format and
stop strings the model was trained with, :class:`repotune.inference.record.RunRecord`). Paths
recorded by the workflow are relative to the directory Snakemake ran in, which is the parent of
``results/``; loading resolves them from there, so the command works from any directory, the
user's own repository included.

The model is the run's exported merged model (``export/merged/``, written when
``export.merged`` is on) when there is one at least as new as the adapter: the same weights
with the adapter added in, loaded without peft, whose imports alone cost seconds. Otherwise it
is the base with the adapter on top, as evaluation loads it.
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

MERGED_WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
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

    @property
    def merged(self) -> Path:
        return self.root / "export" / "merged"

    def exported_merged(self) -> Path | None:
        """The export's merged model when it was made from the current adapter (written after
        it), else None (no export, or an adapter retrained since)."""
        weights = self.merged / MERGED_WEIGHTS
        adapter = self.adapter / ADAPTER_WEIGHTS
        try:
            fresh = weights.stat().st_mtime >= adapter.stat().st_mtime
        except OSError:
            return None
        return self.merged if fresh and (self.merged / "config.json").is_file() else None

    def quantization(self) -> str:
        """How training loaded the base (nf4, int8 or none), from its training summary."""
        summary = self.adapter / "training_summary.json"
        return str(json.loads(summary.read_text(encoding="utf-8"))["quantization"])

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
    """The trained model (merged, or base + adapter), its tokenizer and the run record it is
    asked by."""

    model: Any
    tokenizer: Any
    record: RunRecord
    source: str = ""
    """What was loaded: the merged model's directory or the adapter's."""


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


def load(run: FinishedRun, device: str = "auto", merge: bool = False) -> LoadedModel:
    """Load the run's model: the exported merged model when it is current
    (repotune.modeling.load_merged, no peft), else the base with its adapter
    (repotune.modeling.load_adapted), the adapter added into the weights when ``merge`` (a
    server's faster decoding)."""
    from transformers.utils import logging as transformers_logging

    from repotune.modeling import load_adapted, load_merged
    from repotune.shards.tokenizer import load_tokenizer

    transformers_logging.disable_progress_bar()
    record = run.record()
    tokenizer = load_tokenizer(str(run.tokenizer))
    chosen = pick_device(device)
    merged = run.exported_merged()
    if merged is not None:
        model, source = load_merged(merged, run.adapter, device=chosen), merged
    else:
        with contextlib.chdir(run.results.parent):
            model, source = load_adapted(run.adapter, device=chosen), run.adapter
        if merge and run.quantization() == "none":  # 4-bit weights would round the update away
            model = model.merge_and_unload()
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, record=record, source=str(source))
