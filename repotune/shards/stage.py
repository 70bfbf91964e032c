"""The tokenize stage: curated Parquet splits -> tokenizer + packed Arrow shards + stats.json.

Steps, each in its own module: render each commit as text (repotune.shards.render), get a tokenizer
(repotune.shards.tokenizer: a Hugging Face one, or a byte-level BPE trained on a bounded sample of
the rendered training split), encode in batches on the Rust side, pack a window of commits at a
time into blocks, splitting commits longer than a block into the room left
(repotune.shards.stream, repotune.shards.packing), and write each shard of a split as soon as
it fills (repotune.shards.table). docs/data-contracts.md describes the outputs.

Every split flows through as a stream (read a batch -> encode -> pack a window -> write full
shards), so memory holds a few batches (one being packed, up to ``ENCODE_AHEAD`` encoded
ahead), one window of commits and one shard, whatever the history's length, and the outputs
are the same bytes for any ``batch_commits``.
"""

import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from transformers import PreTrainedTokenizerBase

from repotune.atomic import atomic_path, write_text
from repotune.curate.table import SPLITS
from repotune.errors import InputError
from repotune.inference.record import STATS_KEY, run_record
from repotune.models import ModelSpec, with_overrides
from repotune.progress import PROGRESS, Progress, duration
from repotune.shards.files import FILE_COLUMNS, FileCounts, encode_files
from repotune.shards.fim import FIM_FORMATS, PLAIN_FIM, FimFormat, choose_fim_format
from repotune.shards.marked import Marked
from repotune.shards.preview import write_preview
from repotune.shards.prompt import (
    change_to_message_ids,
    context_texts,
    contexts,
    encoded_first,
    probe_texts,
)
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    MESSAGE_TO_CHANGE,
    TASKS,
    Piece,
    Template,
    choose_template,
    get_template,
    message_part,
    render_parts,
    subject_only,
    task_for,
    task_opening,
)
from repotune.shards.shorten import Unencoded
from repotune.shards.stream import DocumentBatch, LongCommit, StreamPacker
from repotune.shards.table import rows_per_shard, shard_directory
from repotune.shards.tokenizer import (
    TRAIN_BPE,
    TextEncoder,
    configure_parallelism,
    load_tokenizer,
    special_tokens,
    train_bpe,
)

COLUMNS = ("sha", "subject", "body", "files", "recency_weight")
log = logging.getLogger("repotune.tokenize")

PROGRESS_SECONDS = 10.0


@dataclass(frozen=True)
class TokenizeSettings:
    """The ``tokenize:`` config section (config/schema.yaml documents and defaults each key)."""

    seq_len: int
    message_to_change: float
    seed: int
    shard_tokens: int
    batch_commits: int
    bpe_sample_bytes: int
    files: bool = True
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "TokenizeSettings":
        """Settings from a resolved config section (``resolve_config`` fills the defaults)."""
        return cls(**section)

    @classmethod
    def for_model(cls, section: Mapping[str, Any], spec: ModelSpec) -> "TokenizeSettings":
        """Settings from the config section with the model entry's ``tokenize:`` keys over it
        (the tiny CPU preset packs shorter blocks)."""
        return cls.from_config(with_overrides(spec, "tokenize", dict(section)))


@dataclass
class EncodeCounts:
    """What encoding a split took: commits and task directions (the packer counts splits),
    and what became of the change->message commits longer than a block: ``changes_cut``
    (their one document holds the change cut to fit), ``messages_cut`` (of those, the message
    took more than half a block and kept its subject alone), ``dropped`` (not even the subject
    fit half a block: no document), ``pieces_not_encoded`` (the hunks of their changes past
    where a cut can reach, never encoded: repotune.shards.prompt.encoded_first);
    ``subject_only``: long message->change commits whose message took more than half a block,
    asked with their subject alone."""

    commits: int = 0
    tasks: Counter = field(default_factory=Counter)
    changes_cut: int = 0
    messages_cut: int = 0
    dropped: int = 0
    pieces_not_encoded: int = 0
    subject_only: int = 0


def open_parquet(path: str | Path, what: str, columns: Sequence[str], stage: str) -> pq.ParquetFile:
    """The Parquet input ``what`` of this stage, checked for the ``columns`` it reads (a
    one-line error naming the ``stage`` to rerun otherwise)."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering grows with the file
    except (OSError, pa.ArrowException) as error:
        raise InputError(
            f"{what} '{path}'", f"cannot be read ({error})", f"rerun the {stage} stage"
        ) from None
    missing = [name for name in columns if name not in parquet.schema_arrow.names]
    if missing:
        raise InputError(
            f"{what} '{path}'",
            f"lacks column(s) {', '.join(missing)}",
            f"rerun the {stage} stage (docs/data-contracts.md lists the columns)",
        )
    return parquet


def open_curated(path: str | Path) -> pq.ParquetFile:
    """A curated split, checked for the columns this stage reads."""
    return open_parquet(path, "curated split", COLUMNS, "curate")


def open_snapshot(path: str | Path) -> pq.ParquetFile:
    """The snapshot's files table, checked for the columns file documents read."""
    return open_parquet(path, "snapshot", FILE_COLUMNS, "snapshot")


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


@dataclass
class BpeSample:
    """Which training commits the BPE was trained on (reported in stats.json)."""

    budget_bytes: int
    estimated_bytes: int = 0
    rate: float = 1.0
    commits: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"sampled": self.rate < 1.0 or self.bytes >= self.budget_bytes}


def _estimated_bytes(parquet: pq.ParquetFile) -> int:
    """About how many bytes the split renders to: patches, messages, ~100 bytes a file header."""
    total = 0
    columns = ["patch_bytes", "files_changed", "subject", "body"]
    for batch in parquet.iter_batches(batch_size=65536, columns=columns):
        for name, scale in (("patch_bytes", 1), ("files_changed", 100)):
            total += scale * (pc.sum(batch.column(name)).as_py() or 0)
        for name in ("subject", "body"):
            total += pc.sum(pc.binary_length(batch.column(name))).as_py() or 0
    return total


def _in_sample(sha: str, rate: float, seed: int) -> bool:
    """A seeded draw per sha (like task_for), so the sample does not depend on batching."""
    digest = hashlib.sha256(f"bpe:{seed}:{sha}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def bpe_texts(
    path: str | Path, template: Template, settings: TokenizeSettings, sample: BpeSample
) -> Iterator[str]:
    """Rendered training commits for the BPE: all of them, or a seeded sample of about
    ``settings.bpe_sample_bytes`` when the split is larger.

    The BPE trainer keeps a count of every distinct pre-token it sees, which grows with the
    text; a few tens of MB of commits already fix a 4k-50k vocabulary, so a bounded sample
    keeps its memory and time flat. Each commit is kept with probability budget / estimated
    size (a hash of seed and sha), and the stream stops once the budget is reached.
    """
    parquet = open_curated(path)
    sample.estimated_bytes = _estimated_bytes(parquet)
    if sample.estimated_bytes > sample.budget_bytes:
        sample.rate = sample.budget_bytes / sample.estimated_bytes
    progress = Progress(
        log,
        "tokenize: BPE training text",
        min(sample.budget_bytes, sample.estimated_bytes),
        "bytes",
        PROGRESS_SECONDS,
    )
    for batch in parquet.iter_batches(batch_size=settings.batch_commits, columns=list(COLUMNS)):
        if sample.rate < 1.0:
            shas = batch.column("sha").to_pylist()
            keep = [_in_sample(sha, sample.rate, settings.seed) for sha in shas]
            batch = batch.filter(pa.array(keep))
        _, pieces = _rendered(batch.to_pylist(), template, settings)
        for text in ("".join(p.text for p in commit) for commit in pieces):
            size = len(text.encode())
            sample.commits += 1
            sample.bytes += size
            progress.advance(size)
            yield text
            if sample.bytes >= sample.budget_bytes:
                progress.finish()
                return
    progress.finish()


Encoded = tuple[
    list[dict[str, Any]], list[str], list[list[Piece]], list[list[bool]], list[list[int]]
]
"""A batch of commits rendered and encoded: the rows, their tasks, their pieces, which of each
commit's pieces were encoded (repotune.shards.prompt.encoded_first), the ids of
those encoded (one list per piece, in order)."""

ENCODE_AHEAD = 2
"""Batches encoded ahead of the one being split and packed."""


def _encoded_batches(
    paths: Sequence[str | Path],
    template: Template,
    settings: TokenizeSettings,
    encode: Callable[[list[Marked]], list[list[int]]],
) -> Iterator[tuple[str | Path, Encoded | None]]:
    """Each split's rendered batches with the ids of their pieces, in file order, and then
    ``(path, None)`` to say the split has ended.

    The Rust encoder releases the GIL, so batches are encoded on a worker thread while the
    next ones are read and rendered and the last one is split and packed here in Python; the
    worker is kept :data:`ENCODE_AHEAD` batches ahead, across the end of a split, so neither
    a window being packed nor the next split's start leaves it idle.
    """
    with ThreadPoolExecutor(max_workers=1) as encoder:
        pending: deque[tuple[str | Path, tuple | None, Future | None]] = deque()

        def ready() -> tuple[str | Path, Encoded | None]:
            path, batch, job = pending.popleft()
            return path, (*batch, job.result()) if batch and job else None

        for path in paths:
            for rows in read_curated(path, settings.batch_commits):
                tasks, pieces = _rendered(rows, template, settings)
                first = [
                    encoded_first(commit, task, settings.seq_len - 1)
                    for commit, task in zip(pieces, tasks, strict=True)
                ]
                marked = [
                    piece.marked
                    for commit, wanted in zip(pieces, first, strict=True)
                    for piece, now in zip(commit, wanted, strict=True)
                    if now
                ]
                batch = (rows, tasks, pieces, first)
                pending.append((path, batch, encoder.submit(encode, marked)))
                while sum(job is not None for *_, job in pending) > ENCODE_AHEAD:
                    yield ready()
            pending.append((path, None, None))  # the end of the split
        while pending:
            yield ready()


class EncodedSplits:
    """The rendered, encoded batches of several splits, encoded ahead across their ends
    (:func:`_encoded_batches`); read each split's in the order the splits were given."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        template: Template,
        settings: TokenizeSettings,
        encode: TextEncoder,
    ) -> None:
        self._stream = _encoded_batches(paths, template, settings, encode.marked)

    def split(self, path: str | Path) -> Iterator[Encoded]:
        """The batches of the split at ``path``, the next one in order."""
        for at, batch in self._stream:
            if at != path:
                raise ValueError(f"split '{path}' asked for while '{at}' is next")
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        """Stop encoding (the worker finishes the batch it has)."""
        self._stream.close()


def encode_split(
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    settings: TokenizeSettings,
    counts: EncodeCounts,
    encode: TextEncoder | None = None,
    batches: Iterator[Encoded] | None = None,
) -> Iterator[DocumentBatch]:
    """Render and encode a split, a batch of commits at a time: one document per commit that
    fits a block; a longer change->message commit is one document too, its change cut to
    leave the message room (repotune.shards.prompt.change_to_message_ids); a longer
    message->change commit is kept as its encoded pieces and contexts, for the packer to
    split where blocks have room. ``counts`` is updated as the batches go by.

    All pieces of a batch of commits go to the Rust tokenizer in one call (parallel across
    the pieces). A commit's ids are its pieces' ids back to back, the same ids the prompt of
    that commit gets at evaluation (repotune.shards.prompt). The continuation contexts of a
    batch's long commits take one more encode call, each distinct one encoded once
    (:meth:`TextEncoder.recurring`). ``encode``: the template's encoder, when the caller has
    one (a stage shares one across its splits); ``batches``: the split's batches when the caller
    encodes them (:class:`EncodedSplits`).
    """
    encode = encode if encode is not None else TextEncoder(tokenizer, template.markers)
    max_tokens = settings.seq_len - 1
    if batches is None:
        batches = EncodedSplits([path], template, settings, encode).split(path)
    for rows, tasks, parts, first, piece_batch in batches:
        encoded = iter(piece_batch)
        piece_ids = [[next(encoded) if now else None for now in wanted] for wanted in first]
        # A change encoded in part whose pieces so far fit a block may be short: the rest now.
        in_part = [i for i, wanted in enumerate(first) if not all(wanted)]
        _encode_rest(
            encode, parts, piece_ids, [i for i in in_part if _known(piece_ids[i]) <= max_tokens]
        )
        long = [i for i, ids in enumerate(piece_ids) if _known(ids) > max_tokens]
        texts = [context_texts(parts[i], task_opening(rows[i], tasks[i], template)) for i in long]
        # A long commit's message piece over half a block: its subject alone stands in for
        # it (encoded with the contexts), so the message shares a document with its change.
        message_at = {CHANGE_TO_MESSAGE: -1, MESSAGE_TO_CHANGE: 0}
        short = [i for i in long if 2 * len(piece_ids[i][message_at[tasks[i]]]) > max_tokens]
        subjects = [message_part(subject_only(rows[i]), tasks[i], template) for i in short]
        probes = {i: probe_texts(parts[i], piece_ids[i]) for i in long}
        extra = encode.recurring([t for commit in texts for t in commit])
        extra += encode.marked([p.marked for p in subjects])
        extra += encode.marked([t for commit in probes.values() for t in commit])
        context_ids = iter(extra)
        split_at = {i: [next(context_ids) for _ in t] for i, t in zip(long, texts, strict=True)}
        subject_ids = {i: next(context_ids) for i in short}
        probe_ids = {i: [next(context_ids) for _ in t] for i, t in probes.items()}
        documents: list[list[int]] = []
        document_commit: list[int] = []
        long_commits: list[LongCommit] = []
        first_commit = counts.commits
        for index, task in enumerate(tasks):
            commit = counts.commits
            counts.commits += 1
            counts.tasks[task] += 1
            if index not in split_at:
                documents.append(list(itertools.chain.from_iterable(piece_ids[index])))
                document_commit.append(commit)
            elif task == CHANGE_TO_MESSAGE:
                arguments = (split_at[index], max_tokens, encode, subject_ids.get(index))
                try:
                    document = change_to_message_ids(
                        parts[index], piece_ids[index], *arguments, probe_ids[index]
                    )
                except Unencoded:  # the cut reached past the pieces encoded
                    _encode_rest(encode, parts, piece_ids, [index])
                    document = change_to_message_ids(parts[index], piece_ids[index], *arguments)
                counts.pieces_not_encoded += sum(ids is None for ids in piece_ids[index])
                counts.changes_cut += 1
                counts.messages_cut += index in subject_ids and bool(document)
                counts.dropped += not document
                if document:
                    documents.append(document)
                    document_commit.append(commit)
            else:
                context = contexts(parts[index], split_at[index])
                pieces = piece_ids[index]
                if index in subject_ids:
                    pieces = [subject_ids[index], *pieces[1:]]
                    counts.subject_only += 1
                long_commits.append(LongCommit(commit, pieces, context))
        lengths = [len(d) for d in documents]
        flat = itertools.chain.from_iterable(documents)
        yield DocumentBatch(
            tokens=np.fromiter(flat, dtype=np.int32, count=sum(lengths)),
            lengths=np.asarray(lengths, dtype=np.int64),
            commits=np.asarray(document_commit, dtype=np.int64),
            long=long_commits,
            shas=[row["sha"] for row in rows],
            weights=[float(row["recency_weight"]) for row in rows],
            first_commit=first_commit,
        )


def _known(ids: Sequence[list[int] | None]) -> int:
    """The tokens of a commit's pieces encoded so far."""
    return sum(len(piece) for piece in ids if piece is not None)


def _encode_rest(
    encode: TextEncoder,
    parts: Sequence[list[Piece]],
    piece_ids: list[list[list[int] | None]],
    commits: Sequence[int],
) -> None:
    """Encode the pieces of ``commits`` (indexes into ``parts``/``piece_ids``) not encoded yet,
    in one call, and put their ids in ``piece_ids``."""
    missing = [(i, k) for i in commits for k, ids in enumerate(piece_ids[i]) if ids is None]
    encoded = encode.marked([parts[i][k].marked for i, k in missing])
    for (i, k), ids in zip(missing, encoded, strict=True):
        piece_ids[i][k] = ids


def tokenize_split(
    path: str | Path,
    directory: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    settings: TokenizeSettings,
    progress: Progress,
    encoder: TextEncoder,
    files: tuple[str | Path, FimFormat] | None = None,
    batches: Iterator[Encoded] | None = None,
) -> dict[str, Any]:
    """Encode, pack and write one split as a stream; return its stats.

    Memory holds a few batches of commits (:data:`ENCODE_AHEAD`), the packer's window of
    commits (repotune.shards.stream.WINDOW_COMMITS) and at most one shard, whatever the
    split's length.
    ``encoder``: ``TextEncoder(tokenizer, template.markers)``, shared by the splits;
    ``batches``: the split's rendered, encoded batches (:class:`EncodedSplits`), if the caller
    encodes them.
    ``files``: the snapshot and FIM format whose file documents (repotune.shards.files) follow
    the commits, packed with them, each with the newest commit's recency weight.
    """
    counts = EncodeCounts()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    packer = StreamPacker(settings.seq_len, eos, pad, encoder.line_ends)
    rows = rows_per_shard(settings.seq_len, settings.shard_tokens)
    file_counts = FileCounts()
    newest = 0.0
    with shard_directory(directory, rows) as writer:
        for batch in encode_split(path, tokenizer, template, settings, counts, encoder, batches):
            writer.write(packer.add(batch))
            newest = max([newest, *batch.weights])
            progress.advance(len(batch.shas), tokens=batch.tokens_in())
        if files is not None:
            snapshot, fmt = files
            encode = TextEncoder(tokenizer, fmt.markers)
            rows = open_snapshot(snapshot).iter_batches(
                batch_size=settings.batch_commits, columns=list(FILE_COLUMNS)
            )
            batches = encode_files(
                (batch.to_pylist() for batch in rows),
                fmt, encode, settings, counts.commits, newest, file_counts,
            )  # fmt: skip
            for batch in batches:
                writer.write(packer.add(batch))
        writer.write(packer.finish())
    stats = packer.stats()
    file_tokens = sum(file_counts.tokens.values())
    return {
        "commits": counts.commits,
        **stats,
        "tasks": {task: counts.tasks[task] for task in TASKS},
        "change_to_message_cut": {
            "changes_cut": counts.changes_cut,
            "messages_cut": counts.messages_cut,
            "dropped": counts.dropped,
            "pieces_not_encoded": counts.pieces_not_encoded,
        },
        "message_to_change_subject_only": counts.subject_only,
        "shards": writer.shards,
        "tokens_by_kind": {
            "commit": stats["tokens"] - file_tokens,
            **file_counts.as_dict()["tokens"],
        },
        **({"files": file_counts.as_dict()} if files is not None else {}),
    }


def prepare_tokenizer(
    spec: ModelSpec,
    train_path: str | Path,
    settings: TokenizeSettings,
    sample: BpeSample | None = None,
    fim: bool = False,
) -> tuple[PreTrainedTokenizerBase, Template]:
    """The model's tokenizer and the template its special tokens allow.

    ``train-bpe`` trains on the rendered training split (a bounded sample of it, see
    :func:`bpe_texts`; ``sample`` records which) with the requested template's markers as
    special tokens, so that template is always usable, and with ``fim`` (file documents are
    made) the markers of the template's FIM format too (:func:`fim_format`); a loaded
    tokenizer gets its native template only if it carries the markers
    (repotune.shards.render.choose_template).
    """
    if spec.tokenizer == TRAIN_BPE:
        template = get_template(spec.template)
        vocab_size = int(spec.settings.get("bpe_vocab_size", 4096))
        sample = sample if sample is not None else BpeSample(settings.bpe_sample_bytes)
        texts = bpe_texts(train_path, template, settings, sample)
        started = time.perf_counter()
        fim_markers = FIM_FORMATS.get(template.name, PLAIN_FIM).markers if fim else ()
        tokenizer = train_bpe(texts, vocab_size, (*template.markers, *fim_markers))
        log.info(
            "BPE of %d tokens trained in %s on %s",
            vocab_size,
            duration(time.perf_counter() - started),
            sample.as_dict(),
            extra={PROGRESS: True},
        )
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


def fim_format(template: Template, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The FIM format of file documents (stats.json ``fim``): the template's native one when
    the tokenizer has its tokens, else ``plain``; ``special`` says whether its markers are
    single special tokens (a trained BPE's are; a hub tokenizer without them, GPT-2's say,
    reads them as text). ``repotune complete`` asks in this format."""
    specials = special_tokens(tokenizer)
    chosen = choose_fim_format(template.name, specials)
    return {"format": chosen.name, "special": set(chosen.markers) <= specials}


def tokenize_stage(
    splits: Mapping[str, str | Path],
    tokenizer_dir: str | Path,
    shard_dirs: Mapping[str, str | Path],
    stats_path: str | Path,
    settings: TokenizeSettings,
    model: ModelSpec,
    threads: int = 1,
    files: str | Path | None = None,
    preview: str | Path | None = None,
) -> dict[str, Any]:
    """Run the whole stage; return (and write to ``stats_path``) its statistics.

    ``files``: the snapshot (results/snapshot/files.parquet) whose files join the training
    split as whole-file and FIM documents when ``settings.files``; validation and test stay
    commits only, since the evaluation measures held-out commits. ``preview``: where to write
    the decoded preview of what the model is trained on and asked (repotune.shards.preview).
    """
    configure_parallelism(threads)
    started = time.perf_counter()
    check_curated(splits)
    use_files = files is not None and settings.files
    if use_files:
        open_snapshot(files)
    sample = BpeSample(settings.bpe_sample_bytes)
    tokenizer, template = prepare_tokenizer(model, splits["train"], settings, sample, use_files)
    fim = fim_format(template, tokenizer) | {"files": use_files}
    train_files = (files, FIM_FORMATS[fim["format"]]) if use_files else None
    with atomic_path(tokenizer_dir) as temporary:
        tokenizer.save_pretrained(str(temporary))
    log.info("tokenizer %s (vocab %d), template %s", model.tokenizer, len(tokenizer), template.name)
    per_split: dict[str, Any] = {}
    encoder = TextEncoder(tokenizer, template.markers)
    encoded = EncodedSplits([splits[name] for name in SPLITS], template, settings, encoder)
    with contextlib.closing(encoded):
        for name in SPLITS:
            commits = open_curated(splits[name]).metadata.num_rows
            progress = Progress(log, f"tokenize: {name}", commits, "commits", PROGRESS_SECONDS)
            per_split[name] = tokenize_split(
                splits[name], shard_dirs[name], tokenizer, template, settings, progress, encoder,
                train_files if name == "train" else None, encoded.split(splits[name]),
            )  # fmt: skip
            progress.finish()
            log.info("%s: %s", name, per_split[name])
    record = run_record(template, tokenizer, settings.seq_len, use_files)
    if preview is not None:
        write_preview(
            preview, model.name, shard_dirs["train"], splits["test"], tokenizer, record,
            FIM_FORMATS[fim["format"]],
        )  # fmt: skip
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
            "bpe_sample": sample.as_dict() if model.tokenizer == TRAIN_BPE else None,
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
        "fim": fim | {"rate": settings.fim_rate, "spm_rate": settings.fim_spm_rate},
        "task_mix": {"message_to_change": settings.message_to_change, "seed": settings.seed},
        STATS_KEY: record.to_json(),
        "settings": asdict(settings),
        "threads": threads,
        "tokens": tokens,
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 1) if wall > 0 else None,
    }
    write_text(stats_path, json.dumps(stats, indent=2) + "\n")
    return stats
