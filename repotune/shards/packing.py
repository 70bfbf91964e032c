"""Packing: token documents -> blocks of exactly ``seq_len`` tokens, documents never cut.

Training on one commit per padded row wastes most of every row on padding (commits vary
from ten tokens to thousands). Instead several documents share a block. A commit longer than
a block is first split into several documents (:func:`split_document`); only the last
document of a commit is followed by EOS, so the model learns to stop where a commit ends and
nowhere else. The documents are then packed whole into blocks by best-fit decreasing
(:func:`pack`): the longest document first, each into the open block with the least room left
that still holds it. No document straddles a block, so every document is seen with all of its
own context; padding fills the end of a block that no remaining document fits, and on a real
history (thousands of documents, most much shorter than a block) packing efficiency (real
tokens / token slots) stays above 99%.

``position_ids`` restart at 0 at each document start, so a trainer can keep documents from
attending to each other (attention segments are the runs of increasing positions; Hugging
Face models read them from ``position_ids``).

How a long commit is split: at the boundaries of its rendered pieces (the prompt, a file
header with its first hunk, a further hunk, the message); a piece that alone is too long is
split at line boundaries, and a single line that is still too long is cut between tokens as
a last resort. Every document after a commit's first starts with a *context*: the task header
and the header of the file it continues (repotune.shards.prompt builds both), so a
continuation reads as a question the model can answer on its own.
"""

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Encode = Callable[[list[str]], list[list[int]]]
"""Batch encode: texts -> token ids, no special tokens added."""

FILL = 32
"""A long commit's document with at least 1/FILL of its room left is filled with the first
lines of the next piece rather than closed: documents of a long commit then fill their blocks
and packing stays above 99% efficient, at the price of a cut inside a hunk."""


@dataclass(frozen=True)
class Context:
    """The ids a continuation document repeats before a piece of a long commit.

    ``at_start`` when the document starts at the piece's beginning, ``inside`` when it starts
    within the piece (the piece was split at lines). Either may be empty.
    """

    at_start: Sequence[int]
    inside: Sequence[int]


@dataclass(frozen=True)
class Split:
    """A long commit split into documents: their token ids and how the split was made."""

    documents: list[list[int]]
    line_splits: int
    token_cuts: int


def split_document(
    pieces: Sequence[str],
    piece_ids: Sequence[list[int]],
    contexts: Sequence[Context],
    max_tokens: int,
    encode: Encode,
) -> Split:
    """Split a rendering (its pieces, see repotune.shards.render) into documents of <= max_tokens.

    ``piece_ids`` are the pieces encoded one by one; ``contexts`` say what a document starting
    at or in each piece repeats first (each at most half of ``max_tokens``); ``encode`` is
    used again only for a piece too long for a document. Consecutive pieces are grouped
    greedily, so each document starts at a piece boundary when it can; a piece too long for
    any document is split at lines, its first lines filling the current document. The first
    document is a prefix of the rendering; a later one, its context removed, continues where
    the previous one stopped, so the documents without their contexts decode to exactly the
    rendering.
    """
    documents: list[list[int]] = []
    current: list[int] = []
    fresh = True  # ``current`` holds nothing of the commit yet, at most a context
    line_splits = token_cuts = 0
    previous_at = -1  # where the previous piece starts in ``current`` when it is whole there
    base = 0  # the length of the context ``current`` starts with

    def start(context: Sequence[int]) -> None:
        nonlocal current, fresh, base
        if not fresh:
            documents.append(current)
            current, fresh, base = list(context), True, len(context)

    last = len(pieces) - 1
    for index, (piece, ids, context) in enumerate(zip(pieces, piece_ids, contexts, strict=True)):
        fits_alone = len(context.at_start) + len(ids) <= max_tokens
        room = max_tokens - len(current)
        if len(ids) > room and fits_alone and (index == last or room < max_tokens // FILL):
            before = contexts[index - 1].at_start if index else ()
            if (
                index == last
                and previous_at > base
                and len(before) + len(current) - previous_at + len(ids) <= max_tokens
            ):
                # The last piece (the message of change_to_message) does not go alone: the
                # piece before it moves along, so the target keeps some of what it answers.
                moved = current[previous_at:]
                del current[previous_at:]
                start(before)
                current.extend(moved)
                fresh = False
            else:
                start(context.at_start)  # the piece fits a new document: start one
        if len(current) + len(ids) <= max_tokens:
            previous_at = len(current)
            current.extend(ids)
            fresh = False
            continue
        previous_at = -1
        line_splits += 1
        room = max_tokens - len(context.inside)
        for line_ids in encode(piece.splitlines(keepends=True)):
            if len(line_ids) > room:
                token_cuts += 1
            for i in range(0, len(line_ids), room):
                chunk = line_ids[i : i + room]
                if len(current) + len(chunk) > max_tokens:
                    start(context.inside)
                current.extend(chunk)
                fresh = False
    if not fresh:
        documents.append(current)
    return Split(documents, line_splits, token_cuts)


@dataclass(frozen=True)
class Blocks:
    """Packed blocks of one split; row ``b`` of each array is block ``b``.

    ``length`` is the number of real tokens at the start of each block (padding follows);
    ``document_block`` is the block that holds each document.
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    length: np.ndarray
    document_block: np.ndarray
    tokens: int

    @property
    def efficiency(self) -> float:
        """Real tokens over token slots (1.0 when there are no blocks)."""
        slots = self.input_ids.size
        return self.tokens / slots if slots else 1.0


def best_fit(sizes: np.ndarray, capacity: int) -> np.ndarray:
    """The bin of each item, by best-fit decreasing; bins numbered by their first item.

    The longest item first, each into the open bin with the least room left that still holds
    it, else a new bin. Deterministic: ties go to the earlier item and the earlier bin.
    """
    order = np.argsort(-sizes, kind="stable")
    bins = np.empty(len(sizes), dtype=np.int64)
    room: list[tuple[int, int]] = []  # (room left, bin), sorted; full bins are dropped
    opened = 0
    for item in order.tolist():
        size = int(sizes[item])
        at = bisect.bisect_left(room, (size, -1))
        if at == len(room):
            chosen, left = opened, capacity - size
            opened += 1
        else:
            left_before, chosen = room.pop(at)
            left = left_before - size
        bins[item] = chosen
        if left > 0:
            bisect.insort(room, (left, chosen))
    # Renumber bins in the order of their first (lowest-index) item: blocks follow the split.
    first_item = np.full(opened, len(sizes), dtype=np.int64)
    np.minimum.at(first_item, bins, np.arange(len(sizes)))
    rank = np.empty(opened, dtype=np.int64)
    rank[np.argsort(first_item, kind="stable")] = np.arange(opened)
    return rank[bins]


def pack(
    tokens: np.ndarray,
    lengths: np.ndarray,
    ends: np.ndarray,
    seq_len: int,
    eos_id: int,
    pad_id: int,
) -> Blocks:
    """Pack whole documents into blocks of ``seq_len`` tokens, EOS after a commit's last one.

    ``tokens`` holds the documents' ids back to back (no EOS), ``lengths`` their lengths and
    ``ends`` whether each is the last document of its commit (then EOS follows it). A block
    holds its documents in their input order. Positions count from 0 within each document.
    Padding (from ``length`` on) holds ``pad_id`` with positions 0, 1, ... of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.asarray(ends, dtype=bool)
    sizes = lengths + ends
    if len(sizes) and int(sizes.max()) > seq_len:
        raise ValueError(f"a document of {int(sizes.max())} tokens does not fit {seq_len}")
    total = int(sizes.sum())
    stream = np.insert(np.asarray(tokens, dtype=np.int32), np.cumsum(lengths)[ends], eos_id)
    block = best_fit(sizes, seq_len) if len(sizes) else np.zeros(0, np.int64)
    n_blocks = int(block.max()) + 1 if len(block) else 0
    order = np.lexsort((np.arange(len(sizes)), block))
    in_block = np.zeros(len(sizes), dtype=np.int64)
    ordered_sizes = sizes[order]
    ordered_block = block[order]
    before = np.cumsum(ordered_sizes) - ordered_sizes
    block_first = np.searchsorted(ordered_block, np.arange(n_blocks))
    in_block[order] = before - before[block_first][ordered_block]
    source_start = np.cumsum(sizes) - sizes
    destination_start = block * seq_len + in_block
    within = np.arange(total, dtype=np.int64) - np.repeat(source_start, sizes)
    destination = np.repeat(destination_start, sizes) + within
    length = np.bincount(block, weights=sizes, minlength=n_blocks).astype(np.int64)
    slots = n_blocks * seq_len
    input_ids = np.full(slots, pad_id, dtype=np.int32)
    input_ids[destination] = stream
    index = np.arange(slots, dtype=np.int64)
    positions = index % seq_len - np.repeat(length, seq_len)
    positions[destination] = within
    return Blocks(
        input_ids=input_ids.reshape(n_blocks, seq_len),
        position_ids=positions.astype(np.int32).reshape(n_blocks, seq_len),
        length=length.astype(np.int32),
        document_block=block,
        tokens=total,
    )
