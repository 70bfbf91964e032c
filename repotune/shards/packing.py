"""Packing: token documents -> blocks of exactly ``seq_len`` tokens, documents never cut.

Training on one commit per padded row wastes most of every row on padding (commits vary
from ten tokens to thousands). Instead several documents share a block, and no document
straddles a block, so every document is seen with all of its own context:

* a commit that fits a block is one document followed by EOS; these are packed first, by
  best-fit decreasing (:func:`best_fit`): the longest first, each into the open block with
  the least room left that still holds it;
* a longer commit is split into several documents (:func:`split_document`), and only its
  last document is followed by EOS, so the model learns to stop where a commit ends and
  nowhere else. Each document fills the roomiest block left (:class:`GapBudget`), so the
  long commits fill the room best fit leaves; on a real history packing efficiency (real
  tokens / token slots) stays above 99%.

How a long commit is split: at the boundaries of its rendered pieces (the prompt, a file
header with its first hunk, a further hunk, the message), or after a line of the next piece to
fill a document's room; a line too long for a document is cut between tokens. The cuts fall
between the commit's own ids (:func:`split_lines`), so a commit's documents, contexts removed,
are exactly its ids. Every document after a commit's first starts with a *context*: the task
header and the header of the file it continues (repotune.shards.prompt builds both), so a
continuation reads as a question the model can answer on its own.

``position_ids`` restart at 0 at each document start, so a trainer can keep documents from
attending to each other (attention segments are the runs of increasing positions; Hugging
Face models read them from ``position_ids``).
"""

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

FILL = 64
"""A long commit's document with at least 1/FILL of its room left is filled with the first
lines of the next piece rather than closed: documents of a long commit then fill their blocks
and packing stays above 99% efficient, at the price of a cut inside a hunk (the continuation
repeats the file's header)."""

MIN_DOCUMENT = 32
"""No document of a long commit is shorter than this many tokens (an eighth of a block at
most): :func:`min_document`."""


def min_document(seq_len: int) -> int:
    """The shortest document a long commit may have in blocks of ``seq_len`` (its last one
    included): ``MIN_DOCUMENT`` tokens, an eighth of a block for blocks under 256.

    A continuation of a few tokens is mostly its repeated context and teaches little (the old
    change->message pieces of 19 tokens held a message and no change). At least twice the
    usual context (15-30 tokens), it holds some lines of the change. A longer floor costs
    padding: the gaps under it stay empty (4,000 synthetic commits, seq_len 1024: 1/32 of a
    block wastes ~1%, 1/16 ~2%, 1/8 ~2.6%; BENCHMARKS.md).
    """
    return max(1, min(MIN_DOCUMENT, seq_len // 8))


@dataclass(frozen=True)
class Context:
    """What a continuation document of a long commit repeats before a piece.

    ``at_start`` when the document starts at the piece's beginning, ``inside`` when it starts
    within the piece (the piece was split at lines). Each is a tuple of options, longest
    first, the last one the task header alone: a document uses the first that takes at most
    half of it (none when none does).
    """

    at_start: tuple[Sequence[int], ...]
    inside: tuple[Sequence[int], ...]


def fit(options: Sequence[Sequence[int]], limit: int) -> Sequence[int]:
    """The first option no longer than half of ``limit`` (empty when none is)."""
    return next((ids for ids in options if 2 * len(ids) <= limit), ())


class Budget(Protocol):
    """Where a long commit's next document goes: how many tokens it may hold.

    ``need`` is the least limit worth a document (twice the shortest context, plus one).
    """

    def peek(self, need: int) -> int:
        """The limit the next document would get."""
        ...

    def take(self, need: int) -> int:
        """Start the next document; its limit."""
        ...


@dataclass
class FixedBudget:
    """Every document may hold ``max_tokens``."""

    max_tokens: int

    def peek(self, need: int) -> int:
        return self.max_tokens

    def take(self, need: int) -> int:
        return self.max_tokens


@dataclass(frozen=True)
class Split:
    """A long commit split into documents: their token ids and how the split was made."""

    documents: list[list[int]]
    line_splits: int
    token_cuts: int


def split_lines(ids: Sequence[int], line_ends: np.ndarray) -> list[Sequence[int]]:
    """A piece's ids in runs that each end after a token ending in a newline.

    ``line_ends[id]`` says the token's text ends in a newline. The runs are the piece's own
    ids, so a split between them keeps the commit's ids unchanged. A byte-level BPE joins a
    newline with the next line's indentation, so a run can hold several lines; lines that
    start with ``+``, ``-`` or ``@@`` always start a run.
    """
    bounds = line_bounds(ids, line_ends)
    return [ids[a:z] for a, z in itertools.pairwise(bounds)]


def line_bounds(ids: Sequence[int], line_ends: np.ndarray) -> list[int]:
    """Where each run of :func:`split_lines` ends in ``ids`` (the last one at ``len(ids)``),
    with 0 first."""
    array = np.asarray(ids, dtype=np.int64)
    cuts = (np.flatnonzero(line_ends[array[:-1]]) + 1).tolist() if len(array) > 1 else []
    return [0, *cuts, len(array)]


def split_document(
    piece_ids: Sequence[list[int]],
    contexts: Sequence[Context],
    budget: Budget,
    line_ends: np.ndarray,
    floor: int = 1,
) -> Split:
    """Split a rendering, given as its pieces' ids (see repotune.shards.render), into documents.

    ``piece_ids`` are the pieces encoded one by one; ``contexts`` say what a document starting
    at or in each piece repeats first; ``budget`` gives each document its limit when it starts
    (the room of a block it will fill, see :class:`GapBudget`); ``line_ends`` marks the tokens
    that end a line (:func:`split_lines`). Consecutive pieces are grouped greedily: a document
    closes at a piece boundary when less than 1/``FILL`` of it is left, else the next piece's
    first lines fill it; a line too long for any document is cut between tokens. The first
    document is a prefix of the commit's ids; a later one, its context removed, continues where
    the previous one stopped, so the documents without their contexts are the commit's ids.

    ``floor``: no document is shorter (blocks permitting): a document whose remainder would be
    shorter closes early enough to leave the last one ``floor`` tokens, one that cannot hold a
    whole line yet is under ``floor`` is filled with the line cut between tokens, and a short
    remainder asks the budget for room to hold it whole. The first document asks for room for
    the first piece and ``floor`` tokens more, so a message->change question is not cut off
    from its answer in the smallest gap.
    """
    documents: list[list[int]] = []
    current: list[int] = []
    fresh = True  # ``current`` holds nothing of the commit yet, at most a context
    line_splits = token_cuts = 0
    total, consumed = sum(map(len, piece_ids)), 0  # the commit's tokens, those placed so far
    shortest = len(contexts[0].at_start[-1]) if contexts and contexts[0].at_start else 0
    limit = 0

    def need() -> int:
        """The least limit the next document is worth: its floor, or the whole remainder when
        that is too short to split in two."""
        left = total - consumed
        return max(2 * shortest + 1, left + shortest if left < 2 * floor else floor)

    def open_document(options: Sequence[Sequence[int]], least: int = 0) -> None:
        nonlocal current, fresh, limit
        limit = budget.take(max(need(), least))
        left = total - consumed
        context = fit(options, limit)
        if left + len(context) > limit:  # a shorter context may let the remainder fit
            context = next((c for c in options if left + len(c) <= limit), context)
        if 0 < left + len(context) - limit < floor:  # leave the last document its floor
            limit = max(left + len(context) - floor, len(context) + 1)
        current, fresh = list(context), True

    def start(options: Sequence[Sequence[int]]) -> None:
        if not fresh:
            documents.append(current)
            open_document(options)

    # The first document holds the first piece (message->change: the message, the question)
    # whole and some of what follows, where a block has room for that.
    open_document((), len(piece_ids[0]) + floor if piece_ids else 0)
    for ids, context in zip(piece_ids, contexts, strict=True):
        room = limit - len(current)
        if len(ids) > room and not fresh and room < limit // FILL:
            following = budget.peek(need())
            if len(fit(context.at_start, following)) + len(ids) <= following:
                start(context.at_start)  # the piece fits a new document: close at its start
        if len(current) + len(ids) <= limit:
            current.extend(ids)
            consumed += len(ids)
            fresh = False
            continue
        line_splits += 1
        # The piece's lines, as the positions where each ends: whole lines fill the document
        # (a search, not a loop over lines), then the line that does not fit is cut between
        # tokens or starts the next document.
        bounds = line_bounds(ids, line_ends)
        position, placed, last_cut = 0, False, -1  # placed: a new document starts inside it
        while position < len(ids):
            space = limit - len(current)
            end = bounds[bisect.bisect_right(bounds, position + space) - 1]
            if end > position:  # whole lines (or the rest of a cut one) that fit
                current.extend(ids[position:end])
                consumed += end - position
                position, fresh, placed = end, False, True
                space = limit - len(current)
                if position == len(ids):
                    break
            if space > 0 and (fresh or len(current) < floor):
                # not even a new document holds the line, or this one is still too short to
                # close: cut the line between tokens
                line = bisect.bisect_right(bounds, position)
                token_cuts += line != last_cut
                last_cut = line
                current.extend(ids[position : position + space])
                consumed += space
                position += space
                fresh = False
            else:
                start(context.inside if placed else context.at_start)
            placed = True
    if not fresh:
        documents.append(current)
    return Split(documents, line_splits, token_cuts)


class Bins:
    """Blocks being filled, by the room they have left, for best fit.

    Blocks are numbered in the order they are opened; a full block leaves the index.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.opened = 0
        self._room: list[tuple[int, int]] = []  # (room left, block), sorted

    def place(self, size: int) -> int:
        """Put ``size`` tokens in the block with the least room that holds them (or a new one)."""
        at = bisect.bisect_left(self._room, (size, -1))
        if at == len(self._room):
            block, room = self.open(), self.capacity
        else:
            room, block = self._room.pop(at)
        self.release(block, room - size)
        return block

    def open(self) -> int:
        """A new, empty block (not in the index until :meth:`release`)."""
        self.opened += 1
        return self.opened - 1

    def largest(self) -> int:
        """The most room any open block has (0 when none has any)."""
        return self._room[-1][0] if self._room else 0

    def take_largest(self) -> tuple[int, int]:
        """Remove the block with the most room from the index: ``(block, room)``."""
        room, block = self._room.pop()
        return block, room

    def release(self, block: int, room: int) -> None:
        """Put ``block`` back in the index with ``room`` tokens left."""
        if room > 0:
            bisect.insort(self._room, (room, block))


@dataclass
class GapBudget:
    """Each document of a long commit fills the roomiest open block, if it has enough room.

    A block with room for ``minimum`` tokens, and for what the document needs, takes the next
    document (its room less one token for a possible EOS); otherwise the document opens a new
    block of ``max_tokens``.
    ``taken`` records ``(block, room)`` for each document started, in order.
    """

    bins: Bins
    minimum: int
    max_tokens: int
    taken: list[tuple[int, int]] = field(default_factory=list)

    def _fits(self, need: int) -> bool:
        return self.bins.largest() - 1 >= max(self.minimum, need)

    def peek(self, need: int) -> int:
        return self.bins.largest() - 1 if self._fits(need) else self.max_tokens

    def take(self, need: int) -> int:
        if self._fits(need):
            block, room = self.bins.take_largest()
        else:
            block, room = self.bins.open(), self.bins.capacity
        self.taken.append((block, room))
        return min(room - 1, self.max_tokens)

    def settle(self, documents: Sequence[Sequence[int]]) -> list[int]:
        """Return each document's block and give back the room the documents left."""
        blocks = []
        for number, (document, (block, room)) in enumerate(zip(documents, self.taken, strict=True)):
            size = len(document) + (number == len(documents) - 1)  # EOS after the last
            self.bins.release(block, room - size)
            blocks.append(block)
        self.taken.clear()
        return blocks


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


def best_fit(sizes: np.ndarray, bins: Bins) -> np.ndarray:
    """The block of each item, by best-fit decreasing into ``bins``.

    The longest item first, each into the open block with the least room left that still
    holds it, else a new block. Deterministic: ties go to the earlier item and block.
    """
    order = np.argsort(-np.asarray(sizes), kind="stable")
    blocks = np.empty(len(sizes), dtype=np.int64)
    for item in order.tolist():
        blocks[item] = bins.place(int(sizes[item]))
    return blocks


def pack(
    tokens: np.ndarray,
    lengths: np.ndarray,
    ends: np.ndarray,
    seq_len: int,
    eos_id: int,
    pad_id: int,
) -> Blocks:
    """Pack whole documents into blocks of ``seq_len`` tokens by best-fit decreasing.

    ``tokens`` holds the documents' ids back to back (no EOS), ``lengths`` their lengths and
    ``ends`` whether each is the last document of its commit (then EOS follows it).
    """
    sizes = np.asarray(lengths, dtype=np.int64) + np.asarray(ends, dtype=bool)
    block = best_fit(sizes, Bins(seq_len))
    return layout(tokens, lengths, ends, block, seq_len, eos_id, pad_id)


def layout(
    tokens: np.ndarray,
    lengths: np.ndarray,
    ends: np.ndarray,
    block: np.ndarray,
    seq_len: int,
    eos_id: int,
    pad_id: int,
    order: np.ndarray | None = None,
) -> Blocks:
    """Lay documents out in the blocks they were given, EOS after a commit's last one.

    ``block`` is each document's block. Blocks are renumbered in the order of their first
    document and a block holds its documents in order, by ``order`` (each document's commit,
    say; by default its index) then index. Positions count from 0 within each document.
    Padding (from ``length`` on) holds ``pad_id`` with positions 0, 1, ... of its own.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.asarray(ends, dtype=bool)
    sizes = lengths + ends
    if len(sizes) and int(sizes.max()) > seq_len:
        raise ValueError(f"a document of {int(sizes.max())} tokens does not fit {seq_len}")
    index = np.arange(len(sizes), dtype=np.int64)
    key = index if order is None else np.asarray(order, dtype=np.int64)
    block = np.asarray(block, dtype=np.int64)
    used = np.unique(block)
    first = np.full(len(used), np.iinfo(np.int64).max)
    np.minimum.at(first, np.searchsorted(used, block), key)
    rank = np.empty(len(used), dtype=np.int64)
    rank[np.lexsort((used, first))] = np.arange(len(used))
    block = rank[np.searchsorted(used, block)]
    n_blocks = len(used)
    total = int(sizes.sum())
    if int(np.bincount(block, weights=sizes, minlength=n_blocks).max(initial=0)) > seq_len:
        raise ValueError(f"documents given one block hold more than {seq_len} tokens")
    stream = np.insert(np.asarray(tokens, dtype=np.int32), np.cumsum(lengths)[ends], eos_id)
    ordered = np.lexsort((index, key, block))
    in_block = np.zeros(len(sizes), dtype=np.int64)
    ordered_sizes = sizes[ordered]
    ordered_block = block[ordered]
    before = np.cumsum(ordered_sizes) - ordered_sizes
    block_first = np.searchsorted(ordered_block, np.arange(n_blocks))
    in_block[ordered] = before - before[block_first][ordered_block]
    source_start = np.cumsum(sizes) - sizes
    destination_start = block * seq_len + in_block
    within = np.arange(total, dtype=np.int64) - np.repeat(source_start, sizes)
    destination = np.repeat(destination_start, sizes) + within
    length = np.bincount(block, weights=sizes, minlength=n_blocks).astype(np.int64)
    slots = n_blocks * seq_len
    input_ids = np.full(slots, pad_id, dtype=np.int32)
    input_ids[destination] = stream
    slot = np.arange(slots, dtype=np.int64)
    positions = slot % seq_len - np.repeat(length, seq_len)
    positions[destination] = within
    return Blocks(
        input_ids=input_ids.reshape(n_blocks, seq_len),
        position_ids=positions.astype(np.int32).reshape(n_blocks, seq_len),
        length=length.astype(np.int32),
        document_block=block,
        tokens=total,
    )
