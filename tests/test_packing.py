"""Packing documents into blocks, and splitting long commits at file/hunk boundaries."""

import numpy as np
import pytest

from repotune.shards.packing import pack, split_document
from repotune.shards.render import MESSAGE_TO_CHANGE, PLAIN, render_pieces
from repotune.shards.tokenizer import train_bpe
from testdata.curated import commit_row, file_change, synthetic_rows

EOS, PAD = 0, 1


def _documents(seed: int, count: int, longest: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(2, 500, size=rng.integers(1, longest), dtype=np.int32) for _ in range(count)
    ]


def _pack(documents: list[np.ndarray], seq_len: int):
    lengths = np.array([len(d) for d in documents])
    return pack(np.concatenate(documents), lengths, seq_len, EOS, PAD)


def test_blocks_are_full_except_the_last_and_hold_the_stream() -> None:
    documents = _documents(0, 300, 200)
    blocks = _pack(documents, 64)
    stream = np.concatenate([np.append(d, EOS) for d in documents])
    assert blocks.input_ids.shape == (-(-len(stream) // 64), 64)
    assert (blocks.length[:-1] == 64).all() and 0 < blocks.length[-1] <= 64
    assert blocks.tokens == len(stream) == blocks.length.sum()
    real = blocks.input_ids.reshape(-1)[: blocks.tokens]
    assert np.array_equal(real, stream)
    assert (blocks.input_ids[-1, blocks.length[-1] :] == PAD).all()
    assert blocks.efficiency == len(stream) / blocks.input_ids.size > 0.99


def test_positions_restart_at_each_document_and_block_start() -> None:
    documents = _documents(1, 80, 90)
    blocks = _pack(documents, 50)
    for b in range(len(blocks.length)):
        ids, positions = blocks.input_ids[b], blocks.position_ids[b]
        assert positions[0] == 0
        for i in range(1, blocks.length[b]):
            after_eos = ids[i - 1] == EOS
            assert positions[i] == (0 if after_eos else positions[i - 1] + 1)
    last = len(blocks.length) - 1
    padding = blocks.position_ids[last, blocks.length[last] :]
    assert np.array_equal(padding, np.arange(len(padding)))


def test_block_document_ranges_and_spanning_count() -> None:
    documents = [np.full(n, 7, dtype=np.int32) for n in (3, 3, 10, 1)]
    blocks = _pack(documents, 8)  # stream lengths 4, 4, 11, 2 = 21 tokens -> 3 blocks
    assert blocks.length.tolist() == [8, 8, 5]
    assert blocks.first_document.tolist() == [0, 2, 2]
    assert blocks.last_document.tolist() == [1, 2, 3]
    assert blocks.spanning == 1


def test_no_documents_give_no_blocks() -> None:
    blocks = pack(np.zeros(0, np.int32), np.zeros(0, np.int64), 16, EOS, PAD)
    assert blocks.input_ids.shape == (0, 16) and blocks.tokens == 0 and blocks.efficiency == 1.0


@pytest.fixture(scope="module")
def tokenizer():
    rows = synthetic_rows(60, seed=9)
    texts = ["".join(render_pieces(row, MESSAGE_TO_CHANGE, PLAIN)) for row in rows]
    return train_bpe(texts, vocab_size=600, markers=PLAIN.markers).backend_tokenizer


def _encode(tokenizer):
    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    return encode


def _split(tokenizer, pieces: list[str], max_tokens: int):
    encode = _encode(tokenizer)
    split = split_document(pieces, encode(pieces), max_tokens, encode)
    texts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in split.documents]
    return split, texts


def test_long_commit_splits_at_file_and_hunk_boundaries(tokenizer) -> None:
    row = next(r for r in synthetic_rows(200, seed=4) if len(r["files"]) >= 3)
    pieces = render_pieces(row, MESSAGE_TO_CHANGE, PLAIN)
    lengths = [len(ids) for ids in _encode(tokenizer)(pieces)]
    limit = max(max(lengths), sum(lengths) // 4)
    split, texts = _split(tokenizer, pieces, max_tokens=limit)
    assert len(split.documents) >= 3
    assert split.line_splits == split.token_cuts == 0
    assert all(len(ids) <= limit for ids in split.documents)
    assert "".join(texts) == "".join(pieces)
    assert texts[0].startswith("<|message|>")
    assert all(text.startswith(("diff --git ", "@@ ")) for text in texts[1:])
    starts = {sum(len(p) for p in pieces[:i]) for i in range(len(pieces))}
    offsets = np.cumsum([0] + [len(t) for t in texts[:-1]])
    assert set(offsets.tolist()) <= starts


def test_a_hunk_too_long_alone_is_split_at_lines_then_tokens(tokenizer) -> None:
    long_line = "+" + "x = compute(value, index) + " * 40 + "1\n"
    hunk = "@@ -1,3 +1,40 @@\n" + "".join(f"+line_{i} = {i}\n" for i in range(60)) + long_line
    row = commit_row("long", "Grow", [file_change("a.py", hunk)])
    pieces = render_pieces(row, MESSAGE_TO_CHANGE, PLAIN)
    split, texts = _split(tokenizer, pieces, max_tokens=48)
    assert split.line_splits == 1 and split.token_cuts == 1
    assert all(len(ids) <= 48 for ids in split.documents)
    assert "".join(texts) == "".join(pieces)
    full = "".join(pieces)
    line_starts = {0} | {i + 1 for i, char in enumerate(full) if char == "\n"}
    offsets = np.cumsum([0] + [len(t) for t in texts[:-1]]).tolist()
    inside_a_line = [o for o in offsets if o not in line_starts]
    start = full.index(long_line)
    assert inside_a_line and all(start < o < start + len(long_line) for o in inside_a_line)
    line_ids = _encode(tokenizer)([long_line])[0]
    flat = [token for ids in split.documents for token in ids]
    assert any(flat[i : i + len(line_ids)] == line_ids for i in range(len(flat)))
