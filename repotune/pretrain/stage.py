"""The pretrain_base rule: a small code model trained here on local files, cached by key.

Steps: list the corpus (repotune.pretrain.corpus) and hash it with the settings into the
*key*; when ``{cache_dir}/{key}/`` holds a finished base, that is the result (a cache hit,
recorded in the manifest). Otherwise split the files (seeded, by content), train a byte-level
BPE, pack file documents into shards (repotune.pretrain.documents) and train a GPT-2 built
from the size's architecture with the train stage's trainer, every parameter
(``method: full``, repotune.train.trained): the same loop, schedule, validation, best-weights
keeping, checkpoints and resume as fine-tuning. Work in progress lives in
``{cache_dir}/.work-{key}/``, so an interrupted build resumes from its last checkpoint.

The finished entry, ``model/`` (loadable with ``from_pretrained``, the tokenizer beside the
weights) and ``model.json`` (the manifest: corpus files, bytes and tokens, tokens seen, the
loss curve, wall time), appears in one rename. The rule's outputs are a hard-linked copy of it
(``results/pretrained/``), the directory the local-python preset names as its ``base:``.
"""

import csv
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from repotune.atomic import atomic_path, write_text
from repotune.pretrain.corpus import Corpus, split_corpus
from repotune.pretrain.documents import tokenizer_for, write_shards
from repotune.pretrain.settings import MANIFEST, MODEL, PretrainSettings, plan
from repotune.progress import PROGRESS, duration
from repotune.train import trained, training_log
from repotune.train.run import TrainRequest
from repotune.train.trainer import train

log = logging.getLogger("repotune.pretrain")
# What the manifest copies from the trainer's training_summary.json.
TRAINING_FACTS = (
    "steps", "epochs", "tokens", "train_tokens", "best_val_loss", "best_step",
    "final_train_loss", "final_val_loss", "tokens_per_s", "train_seconds", "dtype",
    "micro_batch", "accumulation", "hardware",
)  # fmt: skip


@dataclass(frozen=True)
class PretrainRequest:
    """What the rule passes: settings, the data repository, outputs and where to cache."""

    settings: PretrainSettings
    repo: str | None
    places: Mapping[str, str]
    model_dir: str
    manifest: str
    cache_dir: str
    blob_cache: str | None = None
    planned_key: str | None = None


def pretrain(request: PretrainRequest) -> dict[str, Any]:
    """Build the base (or find it in the cache) and publish it; return the manifest."""
    started = time.perf_counter()
    corpus, key = plan(request.settings, request.repo, request.places, request.blob_cache)
    if request.planned_key is not None and key != request.planned_key:
        log.warning("the corpus changed since the plan; building for key %s", key)
    entry = Path(request.cache_dir) / key
    hit = (entry / MODEL).is_dir() and (entry / MANIFEST).is_file()
    if hit:
        log.info("cache hit: %s", entry, extra={PROGRESS: True})
    else:
        build_entry(corpus, key, request.settings, entry, started)
    manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    manifest["cache"] = {
        "key": key,
        "entry": str(entry),
        "hit": hit,
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_path(request.model_dir) as temporary:
        _link_tree(entry / MODEL, temporary)
    write_text(request.manifest, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _link_tree(source: Path, target: Path) -> None:
    """``source``'s files at ``target``, hard-linked where the file system allows it."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def build_entry(
    corpus: Corpus, key: str, settings: PretrainSettings, entry: Path, started: float
) -> None:
    """Train the base for ``key`` and put it at ``entry`` in one rename."""
    work = entry.with_name(f".work-{key}")
    work.mkdir(parents=True, exist_ok=True)
    splits = split_corpus(
        corpus.files, settings.seed, settings.validation_share, settings.size["corpus_bytes"]
    )
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    tokenizer_dir = work / "tokenizer"
    if not tokenizer_dir.is_dir():
        size = settings.size
        tokenizer = tokenizer_for(splits["train"], size["bpe_vocab_size"], size["bpe_sample_bytes"])
        with atomic_path(tokenizer_dir) as temporary:
            tokenizer.save_pretrained(str(temporary))
    phases["tokenizer"], clock = time.perf_counter() - clock, time.perf_counter()
    log.info("tokenizer ready in %s", duration(phases["tokenizer"]), extra={PROGRESS: True})
    documents = _documents(work, splits, settings)
    phases["documents"], clock = time.perf_counter() - clock, time.perf_counter()
    request = TrainRequest(
        model=settings.model_entry(),
        shards_dir=str(work / "shards"),
        tokenizer_dir=str(tokenizer_dir),
        adapter_dir=str(work / MODEL),
        base_dir=str(work / "init"),
        state_dir=str(work / "train_state"),
        settings=settings.train,
        method=trained.FULL,
    )
    summary = train(request)
    if summary is None:  # not rank 0, or stopped by a test hook
        raise RuntimeError("pretraining stopped before its last step")
    phases["training"] = time.perf_counter() - clock
    manifest = _manifest(corpus, key, settings, splits, documents, summary, work / MODEL)
    manifest["wall_seconds"] = {
        "this_run": round(time.perf_counter() - started, 1),
        **{phase: round(seconds, 1) for phase, seconds in phases.items()},
        "training_total": summary["train_seconds"],
    }
    with atomic_path(entry) as temporary:
        temporary.mkdir()
        shutil.copytree(work / MODEL, temporary / MODEL)
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    shutil.rmtree(work)
    log.info(
        "base %s built in %s: %s tokens seen, validation loss %s",
        key[:12], duration(time.perf_counter() - started), summary["tokens"],
        summary["best_val_loss"], extra={PROGRESS: True},
    )  # fmt: skip


def _documents(work: Path, splits: Mapping[str, list], settings: PretrainSettings) -> dict:
    """The shards of both splits (kept from an interrupted run with the same key)."""
    stats_file = work / "documents.json"
    if stats_file.is_file():
        return json.loads(stats_file.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(str(work / "tokenizer"))
    stats = {
        name: write_shards(
            splits[name], work / "shards" / name, tokenizer, settings.documents, name
        )
        for name in ("train", "validation")
    }
    write_text(stats_file, json.dumps(stats, indent=2))
    return stats


def loss_curve(model_dir: Path) -> list[dict[str, Any]]:
    """The training log's rows as numbers: step, tokens, loss, validation loss, lr, speed."""
    with open(model_dir / training_log.FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {
            "step": int(row["step"]),
            "tokens": int(row["tokens"]),
            "loss": float(row["loss"]),
            "val_loss": float(row["val_loss"]) if row["val_loss"] else None,
            "lr": float(row["lr"]),
            "tokens_per_s": float(row["tokens_per_s"]),
        }
        for row in rows
    ]


def _manifest(
    corpus: Corpus,
    key: str,
    settings: PretrainSettings,
    splits: Mapping[str, list],
    documents: Mapping[str, Any],
    summary: Mapping[str, Any],
    model_dir: Path,
) -> dict[str, Any]:
    """What the base is: its corpus (every file), tokens, training and loss curve."""
    split_of = {item.sha: name for name, files in splits.items() for item in files}
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return {
        "key": key,
        "size": settings.size_name,
        "settings": settings.shaping(),
        "corpus": {
            **corpus.summary(),
            "splits": {
                name: {
                    "files": len(files),
                    "bytes": sum(item.bytes for item in files),
                    "tokens": documents[name]["tokens"] if name in documents else None,
                    "blocks": documents[name]["blocks"] if name in documents else None,
                }
                for name, files in splits.items()
            },
            "documents": documents,
            "files": [
                {
                    "name": item.name,
                    "bytes": item.bytes,
                    "sha": item.sha,
                    "split": split_of[item.sha],
                }
                for item in corpus.files
            ],
        },
        "model": {
            **settings.model_entry()["architecture"],
            "vocab_size": config["vocab_size"],
            "parameters": summary["trainable_params"],
        },
        "training": {key: summary[key] for key in TRAINING_FACTS},
        "loss_curve": loss_curve(model_dir),
    }
