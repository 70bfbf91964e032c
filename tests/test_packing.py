"""Packing documents into blocks, and splitting long commits at file/hunk boundaries."""

import numpy as np
import pytest
import torch

from repotune.shards.packing import (
    Bins,
    Context,
    FixedBudget,
    GapBudget,
    best_fit,
    fit,
    layout,
    pack,
    split_document,
    split_lines,
)
from repotune.shards.prompt import context_texts, contexts
from repotune.shards.render import (
    MESSAGE_TO_CHANGE,
    PLAIN,
    render,
    render_parts,
    render_pieces,
    task_header,
    task_opening,
)
from repotune.shards.table import IGNORE
from repotune.shards.tokenizer import TextEncoder, train_bpe
from repotune.shards.torch_blocks import collate
from testdata.curated import commit_row, file_change, synthetic_rows

EOS, PAD = 0, 1
VOCAB = 600


def _documents(seed: int, count: int, longest: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(2, 500, size=rng.integers(1, longest), dtype=np.int32) for _ in range(count)
    ]


def _pack(documents: list[np.ndarray], seq_len: int, ends: list[bool] | None = None):
    lengths = np.array([len(d) for d in documents])
    ends = np.ones(len(documents), bool) if ends is None else np.asarray(ends)
    return pack(np.concatenate(documents), lengths, ends, seq_len, EOS, PAD)


def _segments(blocks, b: int) -> list[list[int]]:
    """The real tokens of block ``b`` cut where positions restart: its documents."""
    ids = blocks.input_ids[b, : blocks.length[b]].tolist()
    starts = np.flatnonzero(blocks.position_ids[b, : blocks.length[b]] == 0).tolist()
    positions = blocks.position_ids[b, : blocks.length[b]]
    bounds = list(zip(starts, [*starts[1:], len(ids)], strict=True))
    assert all(np.array_equal(positions[a:z], np.arange(z - a)) for a, z in bounds)
    return [ids[a:z] for a, z in bounds]


def test_documents_are_packed_whole_with_eos_only_at_a_commits_end() -> None:
    documents = _documents(0, 600, 64)  # most documents much shorter than a block
    ends = [bool(i % 3) for i in range(len(documents))]  # every third continues a commit
    blocks = _pack(documents, 128, ends)
    pairs = zip(documents, ends, strict=True)
    expected = [[*d.tolist(), *([EOS] if end else [])] for d, end in pairs]
    found = [seg for b in range(len(blocks.length)) for seg in _segments(blocks, b)]
    # Every document is one segment of one block, EOS only after a commit's last document.
    assert sorted(map(tuple, found)) == sorted(map(tuple, expected))
    for index, block in enumerate(blocks.document_block):
        assert expected[index] in _segments(blocks, block)
    assert blocks.tokens == sum(map(len, expected)) == blocks.length.sum()
    ids = blocks.input_ids
    assert int(np.count_nonzero(ids == EOS)) == sum(ends)
    for b in range(len(blocks.length)):
        assert (ids[b, blocks.length[b] :] == PAD).all()
        padding = blocks.position_ids[b, blocks.length[b] :]
        assert np.array_equal(padding, np.arange(len(padding)))
    assert blocks.efficiency == blocks.tokens / ids.size > 0.99


def test_a_document_that_would_straddle_a_block_starts_a_new_one() -> None:
    documents = [np.full(n, 7, dtype=np.int32) for n in (3, 3, 10, 1)]
    blocks = _pack(documents, 11)  # with EOS: 4, 4, 11, 2 -> {11}, {4, 4, 2}
    assert sorted(blocks.length.tolist()) == [10, 11]
    assert blocks.document_block[0] == blocks.document_block[1] == blocks.document_block[3]
    assert blocks.document_block[2] != blocks.document_block[0]
    assert blocks.document_block[0] == 0  # blocks follow the documents' order
    with pytest.raises(ValueError, match="does not fit"):
        _pack([np.full(12, 7, dtype=np.int32)], 11)


def test_long_commits_fill_the_room_whole_commits_leave(encoder) -> None:
    """Whole commits go in by best fit; long ones are split into what room is left."""
    rows = synthetic_rows(120, seed=3)
    seq_len = 512
    texts = [render_pieces(row, MESSAGE_TO_CHANGE, PLAIN) for row in rows]
    ids = [encoder(pieces) for pieces in texts]
    whole = [i for i, p in enumerate(ids) if sum(map(len, p)) < seq_len]
    long = [i for i, p in enumerate(ids) if sum(map(len, p)) >= seq_len]
    assert whole and long
    bins = Bins(seq_len)
    whole_sizes = np.array([sum(map(len, ids[i])) + 1 for i in whole])
    whole_blocks = best_fit(whole_sizes, bins).tolist()
    used = np.bincount(whole_blocks, weights=whole_sizes)
    budget = GapBudget(bins, minimum=16, max_tokens=seq_len - 1)
    ends_line = encoder.line_ends
    documents, blocks, ends = [], [], []
    for i in long:
        parts = render_parts(rows[i], MESSAGE_TO_CHANGE, PLAIN)
        found = contexts(
            parts,
            encoder.marked(context_texts(parts, task_opening(rows[i], MESSAGE_TO_CHANGE, PLAIN))),
        )
        split = split_document(ids[i], found, budget, ends_line)
        blocks += budget.settle(split.documents)
        documents += split.documents
        ends += [False] * (len(split.documents) - 1) + [True]
    sizes = np.array([len(d) for d in documents]) + np.array(ends)
    filled = np.bincount(blocks, weights=sizes, minlength=len(used))
    assert (filled[: len(used)] > 0).any()  # some long documents went into earlier blocks
    total = np.zeros(len(filled))
    total[: len(used)] += used
    total += filled
    assert total.max() <= seq_len
    # The room best fit left in the whole commits' blocks is filled by the long ones.
    assert used.sum() / (len(used) * seq_len) < 0.9
    # (each is left with less room than a few diff lines take).
    assert (seq_len - total[: len(used)]).max() < 32


def test_no_documents_give_no_blocks() -> None:
    blocks = pack(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool), 16, EOS, PAD)
    assert blocks.input_ids.shape == (0, 16) and blocks.tokens == 0 and blocks.efficiency == 1.0


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    rows = synthetic_rows(60, seed=9)
    texts = [render(row, MESSAGE_TO_CHANGE, PLAIN) for row in rows]
    return TextEncoder(train_bpe(texts, vocab_size=VOCAB, markers=PLAIN.markers), PLAIN.markers)


def _split(encoder: TextEncoder, row, max_tokens: int, task: str = MESSAGE_TO_CHANGE):
    """The row split as the tokenize stage splits it, and its documents' texts."""
    parts = render_parts(row, task, PLAIN)
    pieces = [part.text for part in parts]
    context_ids = encoder.marked(context_texts(parts, task_opening(row, task, PLAIN)))
    found = contexts(parts, context_ids)
    ends = encoder.line_ends
    split = split_document(encoder(pieces), found, FixedBudget(max_tokens), ends)
    return split, [encoder.decode(ids) for ids in split.documents]


def _rejoin(row, texts: list[str], task: str = MESSAGE_TO_CHANGE) -> tuple[str, int]:
    """The documents without their contexts, joined, and how many repeat a file header.

    A continuation starts with the task header, then the header of the file it continues
    (unless it starts that file), then the text that follows the previous document.
    """
    full, header = render(row, task, PLAIN), task_header(row, task, PLAIN)
    file_headers = [PLAIN.file_header(change) for change in row["files"]]
    joined, repeated = texts[0], 0
    assert full.startswith(joined)
    for text in texts[1:]:
        assert text.startswith(header)
        body = text[len(header) :]
        if not body.startswith("diff --git "):  # the task header alone: no room for more
            assert full.startswith(joined + body)
        elif not full.startswith(joined + body):
            # The whole file header, or its first line when the whole one is too long.
            [file] = [
                h
                for header in file_headers
                for h in (header, header[: header.index("\n") + 1])
                if body.startswith(h) and full.startswith(joined + body[len(h) :])
            ]
            # The repeated header is the one of the file being continued.
            assert full[: len(joined)].rindex("diff --git ") == full.index(file)
            body = body[len(file) :]
            repeated += 1
        joined += body
    return joined, repeated


def test_long_commit_continuations_repeat_the_task_and_file_headers(encoder) -> None:
    row = next(r for r in synthetic_rows(200, seed=4) if len(r["files"]) >= 3)
    pieces = render_pieces(row, MESSAGE_TO_CHANGE, PLAIN)
    lengths = [len(ids) for ids in encoder(pieces)]
    limit = max(max(lengths) + 60, sum(lengths) // 4)
    split, texts = _split(encoder, row, max_tokens=limit)
    assert len(split.documents) >= 3
    assert split.token_cuts == 0
    assert all(len(ids) <= limit for ids in split.documents)
    assert texts[0].startswith("<|message|>")
    joined, repeated = _rejoin(row, texts)
    assert joined == "".join(pieces)
    assert repeated, "some document should continue a file at a hunk"


def test_a_hunk_too_long_alone_is_split_at_lines_then_tokens(encoder) -> None:
    long_line = "+" + "x = compute(value, index) + " * 40 + "1\n"
    hunk = "@@ -1,3 +1,40 @@\n" + "".join(f"+line_{i} = {i}\n" for i in range(60)) + long_line
    row = commit_row("long", "Grow", [file_change("a.py", hunk)])
    pieces = render_pieces(row, MESSAGE_TO_CHANGE, PLAIN)
    split, texts = _split(encoder, row, max_tokens=64)
    assert split.line_splits == 1 and split.token_cuts == 1
    assert all(len(ids) <= 64 for ids in split.documents)
    # Each continuation repeats the file's header, but the last may have room only for the
    # task header (a context takes at most half a document).
    joined, repeated = _rejoin(row, texts)
    assert joined == "".join(pieces) and repeated >= len(texts) - 2
    header = task_header(row, MESSAGE_TO_CHANGE, PLAIN)
    assert all(text.startswith(header + "diff --git ") for text in texts[1:-1])
    # The line too long for a document is spread over several, cut between tokens.
    assert not any(long_line in text for text in texts)


def test_collate_labels_each_documents_tokens_after_its_first_and_separates_padding() -> None:
    # Block 0: documents [10 11 12] and [20 21], then 3 padding slots whose stored positions
    # are garbage. Block 1 starts mid-document (position 5) and is full.
    input_ids = torch.tensor(
        [[10, 11, 12, 20, 21, PAD, PAD, PAD], [30, 31, 32, 33, 34, 35, 36, 37]]
    )
    stored = torch.tensor([[0, 1, 2, 0, 1, 9, 9, 9], [5, 6, 7, 8, 0, 1, 2, 3]])
    batch = collate(input_ids, stored, torch.tensor([5, 8]))
    assert torch.equal(batch["input_ids"], input_ids)
    # Padding gets its own positions 0, 1, 2: one more "document" no real token attends to.
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], stored[1].tolist()]
    assert batch["labels"].tolist() == [
        [IGNORE, 11, 12, IGNORE, 21, IGNORE, IGNORE, IGNORE],
        [IGNORE, 31, 32, 33, IGNORE, 35, 36, 37],
    ]
    # The caller's tensors are left as they were.
    assert input_ids[0, 1] == 11 and stored[0, 5] == 9


def test_layout_orders_blocks_and_their_documents_by_the_given_order() -> None:
    # Documents 0, 1, 2 (commits 2, 0, 1) share block 7; document 3 (commit 3) has block 4.
    tokens = np.array([10, 11, 20, 30, 31, 32, 40], dtype=np.int32)
    lengths, ends = np.array([2, 1, 3, 1]), np.array([True, True, True, False])
    blocks = layout(tokens, lengths, ends, np.array([7, 7, 7, 4]), 10, EOS, PAD, order=[2, 0, 1, 3])
    # The block whose first commit comes first is block 0; within it, commit order.
    assert blocks.document_block.tolist() == [0, 0, 0, 1]
    assert blocks.input_ids[0].tolist() == [20, EOS, 30, 31, 32, EOS, 10, 11, EOS, PAD]
    assert blocks.position_ids[0].tolist() == [0, 1, 0, 1, 2, 3, 0, 1, 2, 0]
    assert blocks.input_ids[1, :1].tolist() == [40] and blocks.length.tolist() == [9, 1]
    # Without an order, input order: document 3's block is opened last.
    plain = layout(tokens, lengths, ends, np.array([7, 7, 7, 4]), 10, EOS, PAD)
    assert plain.input_ids[0].tolist() == [10, 11, EOS, 20, EOS, 30, 31, 32, EOS, PAD]


def test_layout_refuses_a_block_or_a_document_over_the_sequence_length() -> None:
    tokens = np.arange(2, 11, dtype=np.int32)
    full = layout(tokens, np.array([5, 4]), np.array([False, True]), np.array([0, 0]), 10, EOS, PAD)
    assert full.length.tolist() == [10]  # exactly full is fine
    with pytest.raises(ValueError, match="documents given one block hold more than 9 tokens"):
        layout(tokens, np.array([5, 4]), np.array([False, True]), np.array([0, 0]), 9, EOS, PAD)
    with pytest.raises(ValueError, match="a document of 11 tokens does not fit 10"):
        layout(np.arange(2, 12), np.array([10]), np.array([True]), np.array([0]), 10, EOS, PAD)


def test_split_lines_cuts_after_each_token_that_ends_a_line() -> None:
    ends = np.zeros(10, dtype=bool)
    ends[5] = True  # token 5 ends a line
    assert split_lines([1, 5, 2, 3, 5, 4], ends) == [[1, 5], [2, 3, 5], [4]]
    assert split_lines([5, 4], ends) == [[5], [4]]
    assert split_lines([1, 5, 4], ends) == [[1, 5], [4]]
    assert split_lines([1, 5], ends) == [[1, 5]]  # no empty run after a final newline
    assert split_lines([5], ends) == [[5]]


def test_fit_takes_the_first_context_at_most_half_the_limit() -> None:
    options = ([1, 2, 3], [1, 2], [1])
    assert fit(options, 6) == [1, 2, 3]
    assert fit(options, 5) == [1, 2]
    assert fit(options, 4) == [1, 2]  # exactly half
    assert fit(options, 1) == ()


def test_gap_budget_fills_the_roomiest_block_when_it_holds_the_need() -> None:
    bins = Bins(10)
    assert bins.largest() == 0
    first = bins.place(4)  # block 0, 6 left
    budget = GapBudget(bins, minimum=4, max_tokens=9)
    # A document there may hold the room less one (for EOS): 5, enough for a need of 5 only.
    assert budget.peek(5) == 5 and budget.peek(6) == 9
    assert budget.take(5) == 5  # into block 0
    assert budget.take(5) == 9  # block 0 is taken: a new block, capped at max_tokens
    assert budget.taken == [(first, 6), (1, 10)]
    # Documents of 3 and 4 tokens (EOS after the last) leave 3 in block 0 and 5 in block 1.
    assert budget.settle([[7] * 3, [8] * 4]) == [first, 1]
    assert budget.taken == [] and bins.largest() == 5
    assert bins.place(3) == first  # best fit: the block with 3 left
    budget.take(1)
    with pytest.raises(ValueError):
        budget.settle([])  # every document taken must be settled


def test_a_gap_budget_below_its_minimum_opens_a_new_block() -> None:
    bins = Bins(10)
    bins.place(5)  # 5 left: a document there could hold 4
    budget = GapBudget(bins, minimum=5, max_tokens=12)
    assert budget.peek(1) == 12
    assert budget.take(1) == 9  # a new block's room less one, under max_tokens


def test_best_fit_ties_go_to_the_earlier_item() -> None:
    # Forty items of one size, one per block: item i opens block i (an unstable sort would
    # hand the blocks out in another order).
    assert best_fit(np.full(40, 3), Bins(3)).tolist() == list(range(40))


def test_a_block_with_one_token_left_still_takes_a_one_token_item() -> None:
    bins = Bins(4)
    assert [bins.place(3), bins.place(1), bins.place(1)] == [0, 0, 1]


def test_a_first_piece_longer_than_a_document_is_cut_with_no_empty_document() -> None:
    context = Context(at_start=([9],), inside=([9],))
    pieces = [[1] * 12, [2] * 3]
    split = split_document(pieces, [context, context], FixedBudget(8), np.zeros(10, dtype=bool))
    assert split.documents == [[1] * 8, [9, 1, 1, 1, 1, 2, 2, 2]]
    assert (split.line_splits, split.token_cuts) == (1, 1)


def test_every_long_piece_of_a_commit_counts_its_split_and_its_cut() -> None:
    # The tokenize report's pieces_split_at_lines and lines_cut_at_tokens add up over pieces.
    context = Context(at_start=([9],), inside=([8],))
    pieces = [[1] * 12, [2] * 12]
    split = split_document(pieces, [context, context], FixedBudget(8), np.zeros(10, dtype=bool))
    assert split.documents == [[1] * 8, [8] + [1] * 4, [9] + [2] * 7, [8] + [2] * 5]
    assert (split.line_splits, split.token_cuts) == (2, 2)


class _GapOf:
    """A budget with one gap of ``room`` for any document that needs no more; a new block of
    ``max_tokens`` otherwise (and for the first document). Records each need."""

    def __init__(self, room: int, max_tokens: int) -> None:
        self.room, self.max_tokens, self.needs = room, max_tokens, []

    def peek(self, need: int) -> int:
        return self.room if self.needs and need <= self.room else self.max_tokens

    def take(self, need: int) -> int:
        limit = self.peek(need)
        self.needs.append(need)
        return limit


def test_no_document_of_a_long_commit_is_shorter_than_the_floor() -> None:
    contexts = [Context(at_start=([90 + i],), inside=([80 + i],)) for i in range(3)]
    pieces = [[1] * 10, [2] * 10, [3] * 3]
    ends = np.zeros(100, dtype=bool)
    loose = split_document(pieces, contexts, FixedBudget(10), ends)
    assert loose.documents == [[1] * 10, [91] + [2] * 9, [81, 2, 3, 3, 3]]
    # A floor of 6: the second document closes early to leave the last one 6 tokens.
    split = split_document(pieces, contexts, FixedBudget(10), ends, floor=6)
    assert split.documents == [[1] * 10, [91] + [2] * 7, [81, 2, 2, 2, 3, 3, 3]]
    # A remainder too short to split in two asks the budget for room to hold it whole.
    budget = _GapOf(5, max_tokens=11)
    split = split_document([[1] * 11, [2] * 6], contexts[:2], budget, ends, floor=4)
    assert budget.needs == [11 + 4, 7]  # the first piece whole and the floor, the rest whole
    assert split.documents == [[1] * 11, [91] + [2] * 6]
    # A document too short to close yet takes the next line cut between tokens.
    lines = np.zeros(100, dtype=bool)
    lines[5] = True  # token 5 ends a line
    pieces = [[1, 1, 5], [2] * 9 + [5] + [3] * 3]
    loose = split_document(pieces, contexts[:2], FixedBudget(10), lines)
    assert loose.documents[0] == [1, 1, 5]
    split = split_document(pieces, contexts[:2], FixedBudget(10), lines, floor=5)
    assert split.documents == [[1, 1, 5] + [2] * 7, [81, 2, 2, 5, 3, 3, 3]]
    assert split.token_cuts == 1


def test_a_nearly_full_document_closes_at_a_piece_boundary() -> None:
    # Under 1/64 of the room left (1 of 128): the next piece starts a new document whole.
    contexts = [Context(at_start=([90 + i],), inside=([80 + i],)) for i in range(3)]
    pieces = [[1] * 127, [2] * 10, [3] * 3]
    split = split_document(pieces, contexts, FixedBudget(128), np.zeros(100, dtype=bool))
    assert split.documents == [[1] * 127, [91] + [2] * 10 + [3] * 3]
    assert split.line_splits == 0
    # Exactly 1/64 left (2 of 128): the piece's lines fill the room first.
    pieces = [[1] * 126, [2] * 10, [3] * 3]
    split = split_document(pieces, contexts, FixedBudget(128), np.zeros(100, dtype=bool))
    assert split.line_splits == 1


def test_best_fit_keeps_input_order_among_many_ties() -> None:
    # Enough ties that an unstable sort reorders them: the full-size items open blocks 0, 1,
    # 2, ... in input order.
    sizes = np.random.default_rng(2).integers(1, 4, size=300)
    blocks = best_fit(sizes, Bins(3))
    full = blocks[sizes == 3]
    assert full.tolist() == list(range(len(full)))
