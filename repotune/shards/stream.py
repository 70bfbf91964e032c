"""Streaming between the encoder and the shard writer: documents in, finished blocks out.

The tokenize stage never holds a split: the encoder yields one :class:`DocumentBatch` per batch
of commits, a packer turns it into the blocks it completes (rows of
repotune.shards.table.SHARD_SCHEMA) and keeps back only what the next batch may still change,
and the :class:`~repotune.shards.table.ShardWriter` writes them. Any packer with the
:class:`Packer` interface can sit in between; its carry-over must stay bounded (a few blocks)
for memory to stay flat.

:class:`StreamPacker` streams :func:`repotune.shards.packing.pack`: it keeps the unfinished last
block (less than ``seq_len`` tokens) and packs it again in front of the next batch. Blocks are
cut at multiples of ``seq_len`` from the start of the split and positions restart at every block
start, so the result is the same blocks, byte for byte, as packing the whole split at once.
"""

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from repotune.shards.packing import pack
from repotune.shards.table import SHARD_SCHEMA


@dataclass
class DocumentBatch:
    """The documents of consecutive commits, encoded.

    ``tokens`` holds the documents' ids back to back (no EOS), ``lengths`` their lengths and
    ``commits`` the split-wide index of each document's commit. ``shas`` and ``weights``
    describe the batch's commits, the first of which has index ``first_commit``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    commits: np.ndarray
    shas: list[str]
    weights: list[float]
    first_commit: int


class Packer(Protocol):
    """Takes document batches in commit order; returns the blocks each one completes."""

    def add(self, batch: DocumentBatch) -> pa.Table:
        """Blocks completed by ``batch`` (possibly none), as SHARD_SCHEMA rows."""
        ...

    def finish(self) -> pa.Table:
        """The remaining blocks, the last one padded."""
        ...

    def stats(self) -> dict[str, int | float]:
        """What packing did so far: tokens, blocks, token slots, efficiency, ..."""
        ...


@dataclass
class _Carry:
    """Documents (or a document's tail) of the unfinished block, ids without EOS."""

    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    commits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


class StreamPacker:
    """:func:`~repotune.shards.packing.pack` over a stream of batches, one block carried over."""

    def __init__(self, seq_len: int, eos_id: int, pad_id: int) -> None:
        self.seq_len, self.eos_id, self.pad_id = seq_len, eos_id, pad_id
        self._carry = _Carry()
        self._shas: list[str] = []
        self._weights: list[float] = []
        self._window_start = 0
        self.tokens = 0
        self.blocks = 0
        self.documents = 0
        self.spanning = 0

    def add(self, batch: DocumentBatch) -> pa.Table:
        """Pack the carried block's documents and ``batch``; return the full blocks."""
        with_eos = np.asarray(batch.lengths, dtype=np.int64) + 1
        starts = self.tokens + np.cumsum(with_eos) - with_eos
        ends = starts + with_eos - 1
        self.spanning += int(np.count_nonzero(starts // self.seq_len != ends // self.seq_len))
        self.tokens += int(with_eos.sum())
        self.documents += len(with_eos)
        self._shas.extend(batch.shas)
        self._weights.extend(batch.weights)
        tokens = np.concatenate([self._carry.tokens, np.asarray(batch.tokens, np.int32)])
        lengths = np.concatenate([self._carry.lengths, np.asarray(batch.lengths, np.int64)])
        commits = np.concatenate([self._carry.commits, np.asarray(batch.commits, np.int64)])
        return self._emit(tokens, lengths, commits, final=False)

    def finish(self) -> pa.Table:
        """Pack what is carried into the last block, padded."""
        carry = self._carry
        return self._emit(carry.tokens, carry.lengths, carry.commits, final=True)

    def stats(self) -> dict[str, int | float]:
        """Tokens (EOS included), blocks, token slots, efficiency, spanning documents."""
        slots = self.blocks * self.seq_len
        return {
            "documents": self.documents,
            "tokens": self.tokens,
            "blocks": self.blocks,
            "token_slots": slots,
            "packing_efficiency": round(self.tokens / slots if slots else 1.0, 6),
            "documents_spanning_blocks": self.spanning,
        }

    def _emit(
        self, tokens: np.ndarray, lengths: np.ndarray, commits: np.ndarray, final: bool
    ) -> pa.Table:
        with_eos = lengths + 1
        total = int(with_eos.sum())
        full = -(-total // self.seq_len) if final else total // self.seq_len
        if full == 0:
            self._carry = _Carry(tokens, lengths, commits)
            return SHARD_SCHEMA.empty_table()
        blocks = pack(tokens, lengths, self.seq_len, self.eos_id, self.pad_id)
        cut = full * self.seq_len
        segment_ends = np.cumsum(with_eos)
        first_kept = int(np.searchsorted(segment_ends, cut, side="right"))
        if first_kept < len(lengths):
            token_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            segment_start = int(segment_ends[first_kept] - with_eos[first_kept])
            skip = cut - segment_start
            tail = tokens[token_starts[first_kept] + skip :]
            tail_lengths = lengths[first_kept:].copy()
            tail_lengths[0] -= skip
            self._carry = _Carry(tail, tail_lengths, commits[first_kept:])
        else:
            self._carry = _Carry()
        table = self._rows(blocks, full, commits)
        self.blocks += full
        next_commit = (
            int(self._carry.commits[0])
            if len(self._carry.commits)
            else self._window_start + len(self._shas)
        )
        drop = next_commit - self._window_start
        del self._shas[:drop], self._weights[:drop]
        self._window_start = next_commit
        return table

    def _rows(self, blocks, count: int, commits: np.ndarray) -> pa.Table:
        """The first ``count`` blocks as SHARD_SCHEMA rows; weight = mean over their commits."""
        first = commits[blocks.first_document[:count]] - self._window_start
        last = commits[blocks.last_document[:count]] - self._window_start
        ranges = list(zip(first.tolist(), last.tolist(), strict=True))
        weights = [math.fsum(self._weights[a : b + 1]) / (b - a + 1) for a, b in ranges]
        sha_lists = [self._shas[a : b + 1] for a, b in ranges]
        seq_len = self.seq_len
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * seq_len)
        return pa.Table.from_arrays(
            [
                pa.ListArray.from_arrays(offsets, pa.array(blocks.input_ids[:count].reshape(-1))),
                pa.ListArray.from_arrays(
                    offsets, pa.array(blocks.position_ids[:count].reshape(-1))
                ),
                pa.array(blocks.length[:count], type=pa.int32()),
                pa.array(np.asarray(weights, dtype=np.float32), type=pa.float32()),
                pa.array(sha_lists, type=pa.list_(pa.string())),
            ],
            schema=SHARD_SCHEMA,
        )
