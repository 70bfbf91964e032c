"""Streaming tokenize: batches small enough to cross every boundary give the one-batch result.

The stage reads a split a batch of commits at a time, carries the unfinished block over to the
next batch and writes a shard file whenever one is full. These tests run it with batches of 1,
3 and 7 commits (so batch, block and shard boundaries fall everywhere relative to each other)
and compare with one batch holding the whole split: every output file byte for byte.
"""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk

from repotune.config import resolve_config
from repotune.curate.filters import SeenKeys
from repotune.evaluate import tasks
from repotune.inference.record import run_record
from repotune.logs import run_logged
from repotune.models import resolve_model
from repotune.progress import Progress
from repotune.shards.packing import Context
from repotune.shards.render import MESSAGE_TO_CHANGE, PLAIN, render
from repotune.shards.stage import SPLITS, TokenizeSettings, tokenize_stage
from repotune.shards.stream import (
    DocumentBatch,
    LongCommit,
    SplitCounts,
    StreamPacker,
    block_rows,
    pack_window,
)
from repotune.shards.table import SHARD_SCHEMA, shard_directory
from repotune.shards.tokenizer import TextEncoder, train_bpe
from testdata.curated import synthetic_rows, write_curated, write_split

SEQ_LEN = 64
EOS, PAD = 0, 1


def _settings(batch_commits: int, **overrides) -> TokenizeSettings:
    section = {
        "seq_len": SEQ_LEN,
        "shard_tokens": 17 * SEQ_LEN,  # 17 blocks a shard
        "batch_commits": batch_commits,
        **overrides,
    }
    return TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])


def _tokenize(root: Path, inputs: dict, settings: TokenizeSettings) -> dict:
    model = resolve_model({"preset": "tiny", "bpe_vocab_size": 400})
    out = root / "out"
    return tokenize_stage(
        splits=inputs,
        tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards" / "stats.json",
        settings=settings,
        model=model,
        threads=1,
    )


def _files(root: Path) -> dict[str, bytes]:
    out = root / "out"
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    files.pop("shards/stats.json")
    return files


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> dict:
    rows = (
        synthetic_rows(40, seed=5, split="train")
        + synthetic_rows(9, seed=6, split="validation")
        + synthetic_rows(5, seed=7, split="test")
    )
    return write_curated(tmp_path_factory.mktemp("curated"), rows)


@pytest.mark.parametrize("bpe_sample_bytes", [32_000_000, 20_000])
def test_every_output_byte_is_independent_of_the_batch_size(
    tmp_path, curated, bpe_sample_bytes
) -> None:
    runs = {}
    for batch in (1, 3, 7, 10_000):
        settings = _settings(batch, bpe_sample_bytes=bpe_sample_bytes)
        stats = _tokenize(tmp_path / str(batch), curated, settings)
        runs[batch] = (_files(tmp_path / str(batch)), stats)
    one_batch, stats = runs[10_000]
    assert stats["splits"]["train"]["shards"] > 2, "the split must span several shards"
    short = [name for name, split in stats["splits"].items() if split["blocks"] % 17]
    assert short, "some split must end in a short shard"
    assert stats["splits"]["train"]["commits_split"] > 0, "long commits must be split"
    sample = stats["tokenizer"]["bpe_sample"]
    assert sample["sampled"] == (bpe_sample_bytes < sample["estimated_bytes"])
    for batch, (files, batch_stats) in runs.items():
        assert files.keys() == one_batch.keys(), batch
        different = [name for name in files if files[name] != one_batch[name]]
        assert not different, f"batch_commits={batch} changed {different}"
        for key in ("splits", "tokenizer", "tokens"):
            if key == "tokenizer":
                without_path = {k: v for k, v in batch_stats[key].items() if k != "path"}
                assert without_path == {k: v for k, v in stats[key].items() if k != "path"}
            else:
                assert batch_stats[key] == stats[key], (batch, key)


def test_a_bounded_sample_trains_the_bpe_on_part_of_the_split(tmp_path, curated) -> None:
    full = _tokenize(tmp_path / "full", curated, _settings(512))["tokenizer"]["bpe_sample"]
    budget = full["bytes"] // 3
    sampled = _tokenize(tmp_path / "s", curated, _settings(512, bpe_sample_bytes=budget))
    sample = sampled["tokenizer"]["bpe_sample"]
    assert not full["sampled"] and full["commits"] == 40
    assert sample["sampled"] and 0 < sample["commits"] < 40
    assert sample["rate"] == pytest.approx(budget / sample["estimated_bytes"])
    # the budget is a hard cap: the stream stops at the commit that reaches it
    assert budget <= sample["bytes"] < budget + _largest_commit_bytes(curated["train"])


def _largest_commit_bytes(path: Path) -> int:
    """An upper bound on one rendered commit: its patches, headers and message."""
    table = pq.read_table(path, columns=["patch_bytes", "files_changed"])
    patches = max(table.column("patch_bytes").to_pylist())
    return patches + 200 * max(table.column("files_changed").to_pylist()) + 2000


def _batch(commits: list, start: int, stop: int, shas: list[str], weights) -> DocumentBatch:
    """Commits ``start``..``stop`` as the encoder hands them over (``commits``: ids per short
    commit, a LongCommit per long one)."""
    short = [
        (c, ids) for c, ids in enumerate(commits[start:stop], start) if isinstance(ids, np.ndarray)
    ]
    return DocumentBatch(
        tokens=np.concatenate([ids for _, ids in short]) if short else np.zeros(0, np.int32),
        lengths=np.array([len(ids) for _, ids in short], dtype=np.int64),
        commits=np.array([c for c, _ in short], dtype=np.int64),
        long=[c for c in commits[start:stop] if isinstance(c, LongCommit)],
        shas=shas[start:stop],
        weights=weights[start:stop],
        first_commit=start,
    )


def _history(rng, count: int) -> list:
    """Short commits of random lengths (63 and 64 fill a block with EOS, or not) and long ones
    of several pieces with a one-token context."""
    commits: list = []
    for commit in range(count):
        if rng.random() < 0.15:
            pieces = [
                rng.integers(2, 500, size=int(rng.integers(5, 70))).tolist() for _ in range(3)
            ]
            context = Context(at_start=([1],), inside=([1],))
            commits.append(LongCommit(commit, pieces, [context] * 3))
        else:
            length = int(rng.choice([1, 5, 30, SEQ_LEN - 2, SEQ_LEN - 1]))
            commits.append(rng.integers(2, 500, size=length, dtype=np.int32))
    return commits


def _rows(packer: StreamPacker, commits: list, shas, weights, sizes) -> pa.Table:
    tables, start = [], 0
    for size in sizes:
        stop = min(len(commits), start + size)
        tables.append(packer.add(_batch(commits, start, stop, shas, weights)))
        held = sum(len(batch.shas) for batch in packer._pending)
        assert held < packer.window_commits, "the packer holds at most one window"
        start = stop
        if start == len(commits):
            break
    tables.append(packer.finish())
    return pa.concat_tables(tables)


LINE_ENDS = np.zeros(500, dtype=bool)
LINE_ENDS[2::7] = True


def test_stream_packer_packs_fixed_windows_of_commits_whatever_the_batches() -> None:
    rng = np.random.default_rng(3)
    count, window = 200, 32
    commits = _history(rng, count)
    shas = [f"{commit:040x}" for commit in range(count)]
    weights = [float(w) for w in rng.random(count)]
    expected = []
    for start in range(0, count, window):
        part = _batch(commits, start, min(count, start + window), shas, weights)
        packed = pack_window(part, SEQ_LEN, EOS, PAD, LINE_ENDS, SplitCounts())
        expected.append(block_rows(packed, part.shas, part.weights, start))
        for sha_list in expected[-1].column("shas").to_pylist():
            assert all(start <= int(sha, 16) < start + window for sha in sha_list)
    expected_rows = pa.concat_tables(expected)
    one_go = StreamPacker(SEQ_LEN, EOS, PAD, LINE_ENDS, window_commits=window)
    assert _rows(one_go, commits, shas, weights, [count]).equals(expected_rows)
    for sizes in ([1] * count, rng.integers(1, 9, size=count).tolist(), [31, 33, 64, 72]):
        packer = StreamPacker(SEQ_LEN, EOS, PAD, LINE_ENDS, window_commits=window)
        assert _rows(packer, commits, shas, weights, sizes).equals(expected_rows), sizes
        assert packer.stats() == one_go.stats()
    stats = one_go.stats()
    assert stats["packing_windows"] == -(-count // window)
    assert stats["commits_split"] == sum(isinstance(c, LongCommit) for c in commits)
    assert stats["blocks"] == expected_rows.num_rows
    assert stats["tokens"] == int(pa.compute.sum(expected_rows.column("length")).as_py())


def test_block_weight_counts_tokens_not_commits() -> None:
    # An old commit (weight 0.2) fills most of a block, a new one (weight 1.0) adds a few
    # tokens: the block is mostly old. A plain mean over its two commits would say 0.6.
    old, new = np.arange(2, 92, dtype=np.int32), np.arange(2, 7, dtype=np.int32)
    packer = StreamPacker(128, EOS, PAD, LINE_ENDS)
    table = pa.concat_tables(
        [packer.add(_batch([old, new], 0, 2, ["a" * 40, "b" * 40], [0.2, 1.0])), packer.finish()]
    )
    # 91 tokens (EOS included) of weight 0.2, 6 of weight 1.0.
    expected = (91 * 0.2 + 6 * 1.0) / 97
    assert table.column("weight").to_pylist() == pytest.approx([expected], rel=1e-6)
    assert table.column("shas").to_pylist() == [["a" * 40, "b" * 40]]
    assert table.column("length").to_pylist() == [97]


def test_a_long_commits_documents_weigh_by_their_tokens_contexts_included() -> None:
    # A long commit (weight 0.5) split over blocks shares one of them with a short commit
    # (weight 1.0); every block's weight is the token-weighted mean of what it holds.
    pieces = [list(range(2, 52)), list(range(2, 52)), list(range(2, 52))]
    context = Context(at_start=([1, 1],), inside=([1, 1],))
    commits = [LongCommit(0, pieces, [context] * 3), np.arange(2, 12, dtype=np.int32)]
    packer = StreamPacker(SEQ_LEN, EOS, PAD, LINE_ENDS)
    table = pa.concat_tables(
        [packer.add(_batch(commits, 0, 2, ["a" * 40, "b" * 40], [0.5, 1.0])), packer.finish()]
    )
    for length, shas, weight in zip(
        table.column("length").to_pylist(),
        table.column("shas").to_pylist(),
        table.column("weight").to_pylist(),
        strict=True,
    ):
        if shas == ["a" * 40]:
            assert weight == pytest.approx(0.5)
        else:
            assert shas == ["a" * 40, "b" * 40]
            assert weight == pytest.approx(((length - 11) * 0.5 + 11 * 1.0) / length, rel=1e-6)
    assert any(len(shas) == 2 for shas in table.column("shas").to_pylist())


def test_shard_writer_layout_loads_and_ignores_how_rows_arrive(tmp_path) -> None:
    blocks = pa.table(
        {
            "input_ids": [[i] * 4 for i in range(23)],
            "position_ids": [[0, 1, 2, 3]] * 23,
            "length": pa.array([4] * 23, pa.int32()),
            "weight": pa.array([1.0] * 23, pa.float32()),
            "shas": [[f"{i:040x}"] for i in range(23)],
            "document_shas": [[f"{i:040x}"] for i in range(23)],
        },
        schema=SHARD_SCHEMA,
    )
    for name, pieces in {"whole": [blocks], "rows": blocks.to_batches(max_chunksize=1)}.items():
        with shard_directory(tmp_path / name, rows_per_shard=5) as writer:
            for piece in pieces:
                writer.write(pa.Table.from_batches([piece]) if name == "rows" else piece)
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert files == [f"data-{i:05d}-of-00005.arrow" for i in range(5)] + [
        "dataset_info.json",
        "state.json",
    ]
    for file in files:
        assert (tmp_path / "whole" / file).read_bytes() == (tmp_path / "rows" / file).read_bytes()
    loaded = load_from_disk(str(tmp_path / "whole"))
    assert loaded["input_ids"] == blocks.column("input_ids").to_pylist()
    state = json.loads((tmp_path / "whole" / "state.json").read_text())
    assert [entry["filename"] for entry in state["_data_files"]] == files[:5]


def test_an_interrupted_shard_directory_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), shard_directory(tmp_path / "shards", 2) as writer:
        writer.write(SHARD_SCHEMA.empty_table())
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_progress_lines_carry_rate_and_estimate_to_log_and_terminal(tmp_path, capsys) -> None:
    ticks = iter([0.0, 5.0, 20.0, 40.0])
    log_path = tmp_path / "job.log"

    def job() -> None:
        progress = Progress(
            logging.getLogger("repotune.test"),
            "work",
            400,
            "commits",
            10.0,
            clock=lambda: next(ticks),
        )
        progress.advance(50, tokens=1000)  # t=5: too soon for a line
        progress.advance(50, tokens=1000)  # t=20: 100 of 400 in 20 s
        progress.finish()  # t=40
        logging.getLogger("repotune.test").info("not a progress line")

    stderr = sys.stderr
    try:
        run_logged(str(log_path), job)
    finally:
        sys.stderr.close()
        sys.stderr = stderr
        logging.getLogger().handlers.clear()
    terminal = capsys.readouterr().err
    text = log_path.read_text()
    line = "work: 100/400 commits (25.0%), 5 commits/s, 2,000 tokens, ETA 1m00s"
    assert line in text and line in terminal
    assert "work: done, 100/400 commits (25.0%), 2 commits/s, 2,000 tokens in 40s" in terminal
    assert "not a progress line" in text and "not a progress line" not in terminal


def test_evaluation_questions_streamed_equal_the_split_held_in_memory(
    tmp_path, monkeypatch
) -> None:
    rows = synthetic_rows(45, seed=8, split="test")
    rows[3]["files"] = []  # adds no line: no code-change question
    path = write_split(tmp_path / "test.parquet", rows)
    monkeypatch.setattr(tasks, "BATCH_COMMITS", 4)
    everything = tasks.read_commits(path)
    assert len(everything) == tasks.count_commits(path) == 45
    texts = [render(row, MESSAGE_TO_CHANGE, PLAIN) for row in everything]
    tokenizer = train_bpe(texts, vocab_size=300, markers=PLAIN.markers)
    encoder = TextEncoder(tokenizer, PLAIN.markers)
    record = run_record(PLAIN, tokenizer, seq_len=64, fim_files=False)
    for seed, size in ((0, 7), (3, 20), (1, 100)):
        drawn = tasks.read_commits(path, tasks.sample_indices(45, size, seed))
        assert drawn == tasks.sample(everything, size, seed)
        streamed = tasks.sampled_code_changes(path, record, seed, size, encoder)
        assert streamed == tasks.code_change_examples(everything, record, seed, size, encoder)
        assert len(streamed) == min(size, 44)


def test_duplicate_keys_kept_compactly_answer_like_a_set() -> None:
    rng = np.random.default_rng(4)
    keys = [int(k) for k in rng.integers(0, 2**63, size=300, dtype=np.int64)]
    keys += [*keys[::7], 2**64 - 1, 0]  # repeats, and the extremes of 64 bits
    seen, reference = SeenKeys(recent_limit=16), set()
    for key in keys:
        assert (key in seen) == (key in reference), key
        seen.add(key)
        reference.add(key)
    assert len(seen) == len(reference)
    assert all(key in seen for key in reference)
