"""Streaming between the encoder and the shard writer: documents in, finished blocks out.

The tokenize stage never holds a split: the encoder yields one :class:`DocumentBatch` per batch
of commits, a packer turns them into blocks (rows of repotune.shards.table.SHARD_SCHEMA), and
the :class:`~repotune.shards.table.ShardWriter` writes them. Any packer with the
:class:`Packer` interface can sit in between; what it holds back must stay bounded for memory
to stay flat.

:class:`StreamPacker` packs by *windows*: the split's commits are cut into windows of
:data:`WINDOW_COMMITS` consecutive commits (commits 0-2047, 2048-4095, ... of the split), and
each window is packed on its own by :func:`pack_window`: its whole commits by best-fit
decreasing, then its long commits split into the room left (repotune.shards.packing). The
packer holds at most one window of encoded commits, and since window boundaries count commits
from the start of the split, never batches, the blocks are the same for any
``tokenize.batch_commits``. A window's last blocks are not topped up by the next window's
commits, so packing loses at most about a block per window against packing the split at once.
"""

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from repotune.shards.packing import (
    Bins,
    Blocks,
    Context,
    GapBudget,
    best_fit,
    layout,
    min_document,
    split_document,
)
from repotune.shards.table import SHARD_SCHEMA

WINDOW_COMMITS = 2048
"""Commits packed together. Large enough that best fit finds partners for nearly every commit
(packing stays above 99% on a real history), small enough that a window of encoded commits
takes a few tens of MB whatever the history's length."""


@dataclass(frozen=True)
class LongCommit:
    """A commit longer than a block, encoded: its pieces' ids and the contexts its
    continuation documents may start with (repotune.shards.prompt.contexts)."""

    commit: int
    piece_ids: list[list[int]]
    contexts: list[Context]

    @property
    def tokens(self) -> int:
        return sum(map(len, self.piece_ids))


@dataclass
class DocumentBatch:
    """Consecutive commits, encoded.

    ``tokens`` holds the ids of the commits that fit a block, back to back (no EOS),
    ``lengths`` their lengths and ``commits`` the split-wide index of each one's commit, in
    increasing order; ``long`` the commits longer than a block, not yet split. ``shas`` and
    ``weights`` describe all the batch's commits, the first of which has index
    ``first_commit``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    commits: np.ndarray
    long: list[LongCommit]
    shas: list[str]
    weights: list[float]
    first_commit: int

    def tokens_in(self) -> int:
        """The batch's tokens, long commits included (EOS and contexts not counted)."""
        return int(self.lengths.sum()) + sum(commit.tokens for commit in self.long)

    def split_at(self, commit: int) -> tuple["DocumentBatch", "DocumentBatch"]:
        """The commits before ``commit`` and the rest, as two batches."""
        cut = int(np.searchsorted(self.commits, commit))
        at = int(self.lengths[:cut].sum())
        count = commit - self.first_commit
        head = DocumentBatch(
            self.tokens[:at],
            self.lengths[:cut],
            self.commits[:cut],
            [c for c in self.long if c.commit < commit],
            self.shas[:count],
            self.weights[:count],
            self.first_commit,
        )
        tail = DocumentBatch(
            self.tokens[at:],
            self.lengths[cut:],
            self.commits[cut:],
            [c for c in self.long if c.commit >= commit],
            self.shas[count:],
            self.weights[count:],
            commit,
        )
        return head, tail


def join(batches: list[DocumentBatch]) -> DocumentBatch:
    """Consecutive batches as one."""
    return DocumentBatch(
        tokens=np.concatenate([b.tokens for b in batches]).astype(np.int32, copy=False),
        lengths=np.concatenate([b.lengths for b in batches]).astype(np.int64, copy=False),
        commits=np.concatenate([b.commits for b in batches]).astype(np.int64, copy=False),
        long=[commit for b in batches for commit in b.long],
        shas=[sha for b in batches for sha in b.shas],
        weights=[weight for b in batches for weight in b.weights],
        first_commit=batches[0].first_commit,
    )


class Packer(Protocol):
    """Takes document batches in commit order; returns the blocks each one completes."""

    def add(self, batch: DocumentBatch) -> pa.Table:
        """Blocks completed by ``batch`` (possibly none), as SHARD_SCHEMA rows."""
        ...

    def finish(self) -> pa.Table:
        """The remaining blocks."""
        ...

    def stats(self) -> dict[str, int | float]:
        """What packing did so far: tokens, blocks, token slots, efficiency, ..."""
        ...


@dataclass
class SplitCounts:
    """How the long commits were split (reported in stats.json)."""

    commits_split: int = 0
    line_splits: int = 0
    token_cuts: int = 0


@dataclass(frozen=True)
class Window:
    """A window packed: its blocks, and each document's commit and size (EOS included)."""

    blocks: Blocks
    commits: np.ndarray
    sizes: np.ndarray


def pack_window(
    window: DocumentBatch,
    seq_len: int,
    eos_id: int,
    pad_id: int,
    ends_line: np.ndarray,
    counts: SplitCounts,
) -> Window:
    """Pack a window's commits into blocks; no document straddles a block.

    Whole commits are placed first, by best-fit decreasing; then each long commit is split
    into documents of at least ``min_document(seq_len)`` tokens that fill the roomiest blocks
    (those with that much room left), opening new blocks only when no block has that much
    room (``ends_line``: the tokens a commit may be cut after,
    repotune.shards.tokenizer.TextEncoder.line_ends). A block holds its documents in commit
    order.
    """
    bins = Bins(seq_len)
    lengths = [np.asarray(window.lengths, dtype=np.int64)]
    blocks = [best_fit(lengths[0] + 1, bins)]
    tokens = [np.asarray(window.tokens, dtype=np.int32)]
    commits = [np.asarray(window.commits, dtype=np.int64)]
    ends = [np.ones(len(lengths[0]), dtype=bool)]
    floor = min_document(seq_len)
    budget = GapBudget(bins, minimum=floor, max_tokens=seq_len - 1)
    for commit in window.long:
        cut = split_document(commit.piece_ids, commit.contexts, budget, ends_line, floor)
        blocks.append(np.asarray(budget.settle(cut.documents), dtype=np.int64))
        lengths.append(np.asarray([len(d) for d in cut.documents], dtype=np.int64))
        flat = itertools.chain.from_iterable(cut.documents)
        tokens.append(np.fromiter(flat, dtype=np.int32, count=int(lengths[-1].sum())))
        commits.append(np.full(len(cut.documents), commit.commit, dtype=np.int64))
        ends.append(np.arange(len(cut.documents)) == len(cut.documents) - 1)
        counts.commits_split += 1
        counts.line_splits += cut.line_splits
        counts.token_cuts += cut.token_cuts
    commit_of, length, end = np.concatenate(commits), np.concatenate(lengths), np.concatenate(ends)
    packed = layout(
        np.concatenate(tokens), length, end, np.concatenate(blocks),
        seq_len, eos_id, pad_id, order=commit_of,
    )  # fmt: skip
    return Window(packed, commit_of, length + end)


def block_rows(window: Window, shas: list[str], weights: list[float], first: int) -> pa.Table:
    """A packed window as SHARD_SCHEMA rows.

    ``shas``/``weights`` belong to the window's commits, the first of which has index
    ``first``. A block's ``shas`` are the commits with a document in it, in split order; its
    ``document_shas`` the commit of each of its documents in the order they lie in the block
    (:func:`repotune.shards.packing.layout`: by commit, then document index); its ``weight``
    is the mean recency weight of its tokens (EOS and contexts included, padding not): a block
    mostly made of an old commit counts as old, however many new commits add a few tokens to
    it.
    """
    blocks = window.blocks
    n_blocks, seq_len = blocks.input_ids.shape
    block, commit = blocks.document_block, window.commits - first
    sizes = window.sizes.astype(np.float64)
    recency = np.asarray(weights, dtype=np.float64)
    weighted = np.bincount(block, weights=sizes * recency[commit], minlength=n_blocks)
    weight = weighted / np.maximum(np.bincount(block, weights=sizes, minlength=n_blocks), 1)
    commit_shas = pa.array(shas, type=pa.string())
    laid_out = np.lexsort((np.arange(len(block)), commit, block))
    per_block = np.bincount(block, minlength=n_blocks)
    document_offsets = np.concatenate([[0], np.cumsum(per_block)]).astype(np.int32)
    document_shas = pa.ListArray.from_arrays(
        pa.array(document_offsets), commit_shas.take(pa.array(commit[laid_out]))
    )
    order = np.lexsort((commit, block))
    block, commit = block[order], commit[order]
    new = np.ones(len(order), dtype=bool)  # a commit's documents in one block count once
    new[1:] = (block[1:] != block[:-1]) | (commit[1:] != commit[:-1])
    block, commit = block[new], commit[new]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(block, minlength=n_blocks))])
    block_shas = commit_shas.take(pa.array(commit))
    slots = pa.array(np.arange(n_blocks + 1, dtype=np.int32) * seq_len)
    return pa.Table.from_arrays(
        [
            pa.ListArray.from_arrays(slots, pa.array(blocks.input_ids.reshape(-1))),
            pa.ListArray.from_arrays(slots, pa.array(blocks.position_ids.reshape(-1))),
            pa.array(blocks.length, type=pa.int32()),
            pa.array(weight.astype(np.float32), type=pa.float32()),
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), block_shas),
            document_shas,
        ],
        schema=SHARD_SCHEMA,
    )


class StreamPacker:
    """Packs a stream of batches a window of :data:`WINDOW_COMMITS` commits at a time."""

    def __init__(
        self,
        seq_len: int,
        eos_id: int,
        pad_id: int,
        ends_line: np.ndarray,
        window_commits: int = WINDOW_COMMITS,
    ) -> None:
        self.seq_len, self.eos_id, self.pad_id = seq_len, eos_id, pad_id
        self.ends_line = ends_line
        self.window_commits = window_commits
        self.counts = SplitCounts()
        self._pending: list[DocumentBatch] = []
        self._window_end = window_commits
        self.tokens = 0
        self.blocks = 0
        self.documents = 0
        self.windows = 0

    def add(self, batch: DocumentBatch) -> pa.Table:
        """Buffer ``batch``; pack and return every window it completes."""
        tables = []
        rest = batch
        while rest.first_commit + len(rest.shas) >= self._window_end:
            head, rest = rest.split_at(self._window_end)
            self._pending.append(head)
            tables.append(self._pack())
            self._window_end += self.window_commits
        if rest.shas:
            self._pending.append(rest)
        return pa.concat_tables(tables) if tables else SHARD_SCHEMA.empty_table()

    def finish(self) -> pa.Table:
        """Pack the last, partial window."""
        return self._pack()

    def stats(self) -> dict[str, int | float]:
        """Documents, tokens (EOS included), blocks, token slots, efficiency, splits."""
        slots = self.blocks * self.seq_len
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "blocks": self.blocks,
            "token_slots": slots,
            "packing_efficiency": round(self.tokens / slots if slots else 1.0, 6),
            "packing_windows": self.windows,
            "commits_split": self.counts.commits_split,
            "pieces_split_at_lines": self.counts.line_splits,
            "lines_cut_at_tokens": self.counts.token_cuts,
        }

    def _pack(self) -> pa.Table:
        pending = [batch for batch in self._pending if batch.shas]
        self._pending = []
        if not pending:
            return SHARD_SCHEMA.empty_table()
        window = join(pending)
        packed = pack_window(
            window, self.seq_len, self.eos_id, self.pad_id, self.ends_line, self.counts
        )
        self.tokens += packed.blocks.tokens
        self.blocks += len(packed.blocks.length)
        self.documents += len(packed.commits)
        self.windows += 1
        return block_rows(packed, window.shas, window.weights, window.first_commit)
