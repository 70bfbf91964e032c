"""Packing: token documents -> blocks of exactly ``seq_len`` tokens, no padding but the last.

Training on one commit per padded row wastes most of every row on padding (commits vary
from ten tokens to thousands). Instead the documents are concatenated, each followed by EOS,
and the stream is cut into blocks of ``seq_len``. Only the last block of a split may end in
padding; packing efficiency (real tokens / token slots) is then above 99% for any split with
more than a hundred blocks.

``position_ids`` restart at 0 at each document start and at each block start, so a trainer
can keep documents from attending to each other (attention segments are the runs of
increasing positions; Hugging Face models read them from ``position_ids``). A document that
runs over a block's end continues at position 0 in the next block, cut at a token boundary.

A commit longer than a block is first split into several documents
(:func:`split_document`) at the boundaries of its rendered pieces (file header with first
hunk, further hunks, message), so no document is longer than a block; a piece that alone is
too long is split at line boundaries, and a single line that is still too long is cut between
tokens as a last resort.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Encode = Callable[[list[str]], list[list[int]]]
"""Batch encode: texts -> token ids, no special tokens added."""


@dataclass(frozen=True)
class Split:
    """A long commit split into documents: their token ids and how the split was made."""

    documents: list[list[int]]
    line_splits: int
    token_cuts: int


def _atoms(
    pieces: Sequence[str], piece_ids: Sequence[list[int]], max_tokens: int, encode: Encode
) -> tuple[list[list[int]], int, int]:
    """Token ids of units no longer than ``max_tokens``: pieces, else lines, else token cuts."""
    atoms: list[list[int]] = []
    line_splits = token_cuts = 0
    for piece, ids in zip(pieces, piece_ids, strict=True):
        if len(ids) <= max_tokens:
            atoms.append(ids)
            continue
        line_splits += 1
        for line_ids in encode(piece.splitlines(keepends=True)):
            if len(line_ids) > max_tokens:
                token_cuts += 1
            atoms.extend(line_ids[i : i + max_tokens] for i in range(0, len(line_ids), max_tokens))
    return atoms, line_splits, token_cuts


def split_document(
    pieces: Sequence[str], piece_ids: Sequence[list[int]], max_tokens: int, encode: Encode
) -> Split:
    """Split a rendering (its pieces, see repotune.render) into documents of <= max_tokens.

    ``piece_ids`` are the pieces encoded one by one; ``encode`` is used again only for a piece
    that alone is too long. Consecutive pieces are grouped greedily, so each document starts
    at a piece boundary and there are as few documents as the pieces allow. The documents'
    ids decode to exactly the concatenated pieces.
    """
    atoms, line_splits, token_cuts = _atoms(pieces, piece_ids, max_tokens, encode)
    documents: list[list[int]] = []
    current: list[int] = []
    for ids in atoms:
        if current and len(current) + len(ids) > max_tokens:
            documents.append(current)
            current = []
        current.extend(ids)
    if current:
        documents.append(current)
    return Split(documents, line_splits, token_cuts)


@dataclass(frozen=True)
class Blocks:
    """Packed blocks of one split; row ``b`` of each array is block ``b``.

    ``first_document``/``last_document`` are the indices of the first and last document with
    tokens in the block; ``slot_document`` (blocks x seq_len) the document of every token slot,
    -1 for padding (recency weights are averaged over it, token by token); ``spanning`` counts
    documents that run over a block boundary.
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    length: np.ndarray
    first_document: np.ndarray
    last_document: np.ndarray
    slot_document: np.ndarray
    tokens: int
    spanning: int

    @property
    def efficiency(self) -> float:
        """Real tokens over token slots (1.0 when there are no blocks)."""
        slots = self.input_ids.size
        return self.tokens / slots if slots else 1.0


def pack(tokens: np.ndarray, lengths: np.ndarray, seq_len: int, eos_id: int, pad_id: int) -> Blocks:
    """Pack documents, each followed by EOS, into blocks of ``seq_len`` tokens.

    ``tokens`` holds the documents' ids back to back (no EOS), ``lengths`` their lengths.
    Positions count from 0 within each document and restart at a block start. Padding (only
    in the last block, from ``length`` on) holds ``pad_id`` with positions 0, 1, ... of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n_documents = len(lengths)
    ends = np.cumsum(lengths)
    with_eos = lengths + 1
    total = int(with_eos.sum())
    n_blocks = -(-total // seq_len)
    slots = n_blocks * seq_len
    stream = np.full(slots, pad_id, dtype=np.int32)
    stream[:total] = np.insert(np.asarray(tokens, dtype=np.int32), ends, eos_id)
    starts = ends - lengths + np.arange(n_documents)
    index = np.arange(slots, dtype=np.int64)
    segment_start = np.concatenate([np.repeat(starts, with_eos), np.full(slots - total, total)])
    segment_start = np.maximum(segment_start, index - index % seq_len)
    document_of_token = np.repeat(np.arange(n_documents), with_eos)
    block_starts = np.arange(n_blocks, dtype=np.int64) * seq_len
    block_ends = np.minimum(block_starts + seq_len, total)
    last_tokens = starts + with_eos - 1
    slot_document = np.full(slots, -1, dtype=np.int32)
    slot_document[:total] = document_of_token
    return Blocks(
        input_ids=stream.reshape(n_blocks, seq_len),
        position_ids=(index - segment_start).astype(np.int32).reshape(n_blocks, seq_len),
        length=(block_ends - block_starts).astype(np.int32),
        first_document=document_of_token[block_starts],
        last_document=document_of_token[block_ends - 1],
        slot_document=slot_document.reshape(n_blocks, seq_len),
        tokens=total,
        spanning=int(np.count_nonzero(starts // seq_len != last_tokens // seq_len)),
    )
