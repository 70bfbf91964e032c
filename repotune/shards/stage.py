"""The tokenize stage: curated Parquet splits -> tokenizer + packed Arrow shards + stats.json.

Steps, each in its own module: render each commit as text (repotune.shards.render), get a tokenizer
(repotune.shards.tokenizer: a Hugging Face one, or a byte-level BPE trained on the rendered training
split), encode in batches on the Rust side, split commits longer than a block and pack the
documents into blocks (repotune.shards.packing), then write one ``datasets`` directory per split.
docs/data-contracts.md describes the outputs.
"""

import itertools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from repotune.atomic import atomic_path, write_text
from repotune.errors import InputError
from repotune.models import ModelSpec
from repotune.shards.packing import (
    Bins,
    Blocks,
    Context,
    GapBudget,
    best_fit,
    layout,
    split_document,
)
from repotune.shards.prompt import context_texts, contexts, line_ends
from repotune.shards.render import (
    TASKS,
    Piece,
    Template,
    choose_template,
    get_template,
    render_parts,
    task_for,
    task_header,
)
from repotune.shards.tokenizer import (
    TRAIN_BPE,
    TextEncoder,
    configure_parallelism,
    load_tokenizer,
    special_tokens,
    train_bpe,
)

SPLITS = ("train", "validation", "test")
COLUMNS = ("sha", "subject", "body", "files", "recency_weight")
log = logging.getLogger("repotune.tokenize")

SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("position_ids", pa.list_(pa.int32())),
        pa.field("length", pa.int32()),
        pa.field("weight", pa.float32()),
        pa.field("shas", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class TokenizeSettings:
    """The ``tokenize:`` config section (config/schema.yaml documents each key)."""

    seq_len: int = 1024
    message_to_change: float = 0.5
    seed: int = 0
    shard_tokens: int = 4_194_304
    batch_commits: int = 512

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "TokenizeSettings":
        """Settings from a resolved config section (unknown keys are the schema's concern)."""
        return cls(**{key: section[key] for key in cls.__dataclass_fields__ if key in section})


@dataclass(frozen=True)
class LongCommit:
    """A commit longer than a block, encoded, waiting to be split where blocks have room."""

    commit: int
    piece_ids: list[list[int]]
    contexts: list[Context]


@dataclass
class SplitDocuments:
    """One split encoded: its documents in commit order and what it took to make them.

    Token ids are kept as int32 arrays (one per batch of commits, documents back to back),
    not Python lists: a split of 10^8 tokens then takes 400 MB, not several GB.
    """

    token_batches: list[np.ndarray] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    document_commit: list[int] = field(default_factory=list)
    ends: list[bool] = field(default_factory=list)
    long: list[LongCommit] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    tasks: Counter = field(default_factory=Counter)
    commits_split: int = 0
    line_splits: int = 0
    token_cuts: int = 0

    def add(self, documents: list[list[int]]) -> None:
        """Append documents' ids (their commits and ends are recorded by the caller)."""
        lengths = [len(d) for d in documents]
        self.lengths.extend(lengths)
        flat = itertools.chain.from_iterable(documents)
        self.token_batches.append(np.fromiter(flat, dtype=np.int32, count=sum(lengths)))

    def tokens(self) -> np.ndarray:
        """All documents' ids back to back."""
        return np.concatenate(self.token_batches) if self.token_batches else np.zeros(0, np.int32)


def open_curated(path: str | Path) -> pq.ParquetFile:
    """A curated split, checked for the columns this stage reads."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"curated split '{path}'", f"cannot be read ({error})", "rerun the curate stage"
        ) from None
    missing = [name for name in COLUMNS if name not in parquet.schema_arrow.names]
    if missing:
        raise InputError(
            f"curated split '{path}'",
            f"lacks column(s) {', '.join(missing)}",
            "rerun the curate stage (docs/data-contracts.md lists the columns)",
        )
    return parquet


def check_curated(splits: Mapping[str, str | Path]) -> None:
    """Fail before writing anything if a split is unreadable or the training split is empty."""
    parquets = {name: open_curated(splits[name]) for name in SPLITS}
    if parquets["train"].metadata.num_rows == 0:
        raise InputError(
            f"curated split '{splits['train']}'",
            "has no commits",
            "point 'repo' at a repository with history or loosen the curate filters",
        )


def read_curated(path: str | Path, batch_commits: int) -> Iterator[list[dict[str, Any]]]:
    """The commits of a curated split, in file order, ``batch_commits`` at a time."""
    parquet = open_curated(path)
    for batch in parquet.iter_batches(batch_size=batch_commits, columns=list(COLUMNS)):
        yield batch.to_pylist()


def _rendered(rows: list[dict[str, Any]], template: Template, settings: TokenizeSettings):
    tasks = [task_for(row["sha"], settings.message_to_change, settings.seed) for row in rows]
    parts = [render_parts(row, task, template) for row, task in zip(rows, tasks, strict=True)]
    return tasks, parts


def rendered_texts(
    path: str | Path, template: Template, settings: TokenizeSettings
) -> Iterator[str]:
    """Every commit of a split rendered as its training text (tokenizer training reads this)."""
    for rows in read_curated(path, settings.batch_commits):
        _, parts = _rendered(rows, template, settings)
        yield from ("".join(p.text for p in commit) for commit in parts)


def _encoded_batches(
    path: str | Path,
    template: Template,
    settings: TokenizeSettings,
    encode: Callable[[list[str]], list[list[int]]],
) -> Iterator[tuple[list[dict[str, Any]], list[str], list[list[Piece]], list[list[int]]]]:
    """Rendered batches with the ids of their pieces, in file order.

    The Rust encoder releases the GIL, so one batch is encoded on a worker thread while the
    next is read and rendered here in Python: rendering no longer waits for the encoder.
    """
    with ThreadPoolExecutor(max_workers=1) as encoder:
        pending = None
        for rows in read_curated(path, settings.batch_commits):
            tasks, pieces = _rendered(rows, template, settings)
            job = encoder.submit(encode, [piece.text for commit in pieces for piece in commit])
            if pending is not None:
                yield *pending[:3], pending[3].result()
            pending = (rows, tasks, pieces, job)
        if pending is not None:
            yield *pending[:3], pending[3].result()


def encode_split(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    settings: TokenizeSettings,
) -> SplitDocuments:
    """Render and encode a split: one document per commit that fits a block.

    All pieces of a batch of commits go to the Rust tokenizer in one call (parallel across
    the pieces). A commit's ids are its pieces' ids back to back, the same ids the prompt of
    that commit gets at evaluation (repotune.shards.prompt). A commit longer than a block is
    kept as its encoded pieces and the ids of its continuation contexts (one more encode call
    per batch for all of them): :func:`place_documents` splits it where blocks have room.
    """
    encode = TextEncoder(tokenizer, template.markers)
    max_tokens = settings.seq_len - 1
    out = SplitDocuments()
    for rows, tasks, parts, piece_batch in _encoded_batches(path, template, settings, encode):
        encoded = iter(piece_batch)
        piece_ids = [[next(encoded) for _ in commit] for commit in parts]
        long = [i for i, ids in enumerate(piece_ids) if sum(map(len, ids)) > max_tokens]
        texts = [context_texts(parts[i], task_header(rows[i], tasks[i], template)) for i in long]
        context_ids = iter(encode([text for commit in texts for text in commit]))
        split_at = {i: [next(context_ids) for _ in t] for i, t in zip(long, texts, strict=True)}
        documents: list[list[int]] = []
        for index, (row, task) in enumerate(zip(rows, tasks, strict=True)):
            commit = len(out.shas)
            out.shas.append(row["sha"])
            out.weights.append(float(row["recency_weight"]))
            out.tasks[task] += 1
            if index in split_at:
                commit_parts = parts[index]
                out.long.append(
                    LongCommit(commit, piece_ids[index], contexts(commit_parts, split_at[index]))
                )
                continue
            documents.append([token for ids in piece_ids[index] for token in ids])
            out.document_commit.append(commit)
            out.ends.append(True)
        out.add(documents)
    return out


def place_documents(split: SplitDocuments, seq_len: int, ends_line: np.ndarray) -> np.ndarray:
    """The block of every document, after splitting the long commits into ``split``.

    Whole commits are placed first, by best-fit decreasing; then each long commit is split
    into documents that fill the roomiest blocks (those with at least 1/32 of a block left),
    opening new blocks only when no block has that much room (``ends_line``: the tokens a
    commit may be cut after, repotune.shards.prompt.line_ends). A commit that fits a block is
    never cut, and the long commits fill what best-fit leaves: packing efficiency stays above
    99% on a real history.
    """
    bins = Bins(seq_len)
    sizes = np.asarray(split.lengths, dtype=np.int64) + 1
    blocks = [best_fit(sizes, bins)]
    budget = GapBudget(bins, minimum=max(seq_len // 32, 4), max_tokens=seq_len - 1)
    for commit in split.long:
        cut = split_document(commit.piece_ids, commit.contexts, budget, ends_line)
        blocks.append(np.asarray(budget.settle(cut.documents), dtype=np.int64))
        split.document_commit.extend([commit.commit] * len(cut.documents))
        split.ends.extend([False] * (len(cut.documents) - 1) + [True])
        split.commits_split += 1
        split.line_splits += cut.line_splits
        split.token_cuts += cut.token_cuts
        split.add(cut.documents)
    split.long.clear()
    return np.concatenate(blocks)


def _list_array(values: np.ndarray, width: int) -> pa.Array:
    offsets = pa.array(np.arange(values.shape[0] + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def shard_table(blocks: Blocks, split: SplitDocuments) -> pa.Table:
    """The blocks as an Arrow table with the shard columns (docs/data-contracts.md).

    A block's ``shas`` are the commits with a document in it, in split order; its ``weight``
    is the mean recency weight of those commits.
    """
    seq_len = blocks.input_ids.shape[1]
    commit_of = np.asarray(split.document_commit, dtype=np.int64)
    order = np.lexsort((np.arange(len(commit_of)), commit_of, blocks.document_block))
    block, commit = blocks.document_block[order], commit_of[order]
    new = np.ones(len(order), dtype=bool)  # a commit's documents in one block count once
    new[1:] = (block[1:] != block[:-1]) | (commit[1:] != commit[:-1])
    block, commit = block[new], commit[new]
    n_blocks = len(blocks.length)
    counts = np.bincount(block, minlength=n_blocks)
    recency = np.asarray(split.weights, dtype=np.float64)
    weights = np.bincount(block, weights=recency[commit], minlength=n_blocks) / np.maximum(
        counts, 1
    )
    sha_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    shas = pa.array(split.shas, type=pa.string()).take(pa.array(commit))
    return pa.Table.from_arrays(
        [
            _list_array(blocks.input_ids, seq_len),
            _list_array(blocks.position_ids, seq_len),
            pa.array(blocks.length, type=pa.int32()),
            pa.array(weights.astype(np.float32), type=pa.float32()),
            pa.ListArray.from_arrays(pa.array(sha_offsets), shas),
        ],
        schema=SHARD_SCHEMA,
    )


def num_shards(blocks: int, seq_len: int, shard_tokens: int) -> int:
    """Shards for a split: about ``shard_tokens`` token slots each, at least one block each."""
    return max(1, min(blocks, math.ceil(blocks * seq_len / shard_tokens)))


def write_shards(table: pa.Table, directory: str | Path, shards: int) -> None:
    """Save ``table`` with ``datasets.save_to_disk`` in ``shards`` Arrow files, atomically."""
    with atomic_path(directory) as temporary:
        Dataset(InMemoryTable(table)).save_to_disk(str(temporary), num_shards=shards)


def prepare_tokenizer(
    spec: ModelSpec, train_path: str | Path, settings: TokenizeSettings
) -> tuple[PreTrainedTokenizerBase, Template]:
    """The model's tokenizer and the template its special tokens allow.

    ``train-bpe`` trains on the rendered training split with the requested template's markers
    as special tokens, so that template is always usable; a loaded tokenizer gets its native
    template only if it carries the markers (repotune.shards.render.choose_template).
    """
    if spec.tokenizer == TRAIN_BPE:
        template = get_template(spec.template)
        vocab_size = int(spec.settings.get("bpe_vocab_size", 4096))
        texts = rendered_texts(train_path, template, settings)
        tokenizer = train_bpe(texts, vocab_size, template.markers)
        return tokenizer, template
    tokenizer = load_tokenizer(spec.tokenizer)
    template = choose_template(spec.template, special_tokens(tokenizer))
    if template.name != spec.template:
        log.warning(
            "tokenizer %s lacks the special tokens of template '%s'; using '%s'",
            spec.tokenizer,
            spec.template,
            template.name,
        )
    return tokenizer, template


def _split_stats(split: SplitDocuments, blocks: Blocks, shards: int) -> dict[str, Any]:
    return {
        "commits": len(split.shas),
        "documents": len(split.lengths),
        "tokens": blocks.tokens,
        "blocks": len(blocks.length),
        "token_slots": int(blocks.input_ids.size),
        "packing_efficiency": round(blocks.efficiency, 6),
        "commits_split": split.commits_split,
        "pieces_split_at_lines": split.line_splits,
        "lines_cut_at_tokens": split.token_cuts,
        "tasks": {task: split.tasks[task] for task in TASKS},
        "shards": shards,
    }


def tokenize_stage(
    splits: Mapping[str, str | Path],
    tokenizer_dir: str | Path,
    shard_dirs: Mapping[str, str | Path],
    stats_path: str | Path,
    settings: TokenizeSettings,
    model: ModelSpec,
    threads: int = 1,
) -> dict[str, Any]:
    """Run the whole stage; return (and write to ``stats_path``) its statistics."""
    configure_parallelism(threads)
    started = time.perf_counter()
    check_curated(splits)
    tokenizer, template = prepare_tokenizer(model, splits["train"], settings)
    with atomic_path(tokenizer_dir) as temporary:
        tokenizer.save_pretrained(str(temporary))
    log.info("tokenizer %s (vocab %d), template %s", model.tokenizer, len(tokenizer), template.name)
    per_split: dict[str, Any] = {}
    ends_line = line_ends(TextEncoder(tokenizer, template.markers), len(tokenizer))
    for name in SPLITS:
        split = encode_split(splits[name], tokenizer, template, settings)
        eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        block = place_documents(split, settings.seq_len, ends_line)
        blocks = layout(
            split.tokens(), np.asarray(split.lengths), np.asarray(split.ends, dtype=bool),
            block, settings.seq_len, eos, pad, order=np.asarray(split.document_commit),
        )  # fmt: skip
        shards = num_shards(len(blocks.length), settings.seq_len, settings.shard_tokens)
        write_shards(shard_table(blocks, split), shard_dirs[name], shards)
        per_split[name] = _split_stats(split, blocks, shards)
        log.info("%s: %s", name, per_split[name])
    wall = time.perf_counter() - started
    tokens = sum(s["tokens"] for s in per_split.values())
    stats = {
        "model": model.name,
        "seq_len": settings.seq_len,
        "splits": per_split,
        "tokenizer": {
            "source": model.tokenizer,
            "path": str(tokenizer_dir),
            "trained": model.tokenizer == TRAIN_BPE,
            "vocab_size": len(tokenizer),
            "eos_token": tokenizer.eos_token,
            "eos_id": tokenizer.eos_token_id,
            "pad_token": tokenizer.pad_token,
            "pad_id": tokenizer.pad_token_id,
        },
        "template": {
            "name": template.name,
            "requested": model.template,
            "description": template.description,
        },
        "task_mix": {"message_to_change": settings.message_to_change, "seed": settings.seed},
        "settings": asdict(settings),
        "threads": threads,
        "tokens": tokens,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 1) if wall > 0 else None,
    }
    write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    return stats
