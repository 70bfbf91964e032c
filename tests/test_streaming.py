"""Streaming tokenize: batches small enough to cross every boundary give the one-batch result.

The stage reads a split a batch of commits at a time, carries the unfinished block over to the
next batch and writes a shard file whenever one is full. These tests run it with batches of 1,
3 and 7 commits (so batch, block and shard boundaries fall everywhere relative to each other)
and compare with one batch holding the whole split: every output file byte for byte.
"""

import json
import logging
import math
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
from repotune.logs import run_logged
from repotune.models import resolve_model
from repotune.progress import Progress
from repotune.shards.packing import pack
from repotune.shards.render import PLAIN
from repotune.shards.stage import SPLITS, TokenizeSettings, tokenize_stage
from repotune.shards.stream import DocumentBatch, StreamPacker
from repotune.shards.table import SHARD_SCHEMA, shard_directory
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


def _one_batch(documents: list[np.ndarray], commits: list[int], shas: list[str], weights):
    lengths = np.array([len(d) for d in documents], dtype=np.int64)
    return DocumentBatch(
        tokens=np.concatenate(documents) if documents else np.zeros(0, np.int32),
        lengths=lengths,
        commits=np.asarray(commits, dtype=np.int64),
        shas=shas,
        weights=weights,
        first_commit=0,
    )


def test_stream_packer_cuts_the_same_blocks_as_packing_all_at_once() -> None:
    rng = np.random.default_rng(3)
    commits = 200
    documents, document_commit = [], []
    for commit in range(commits):
        for _ in range(rng.integers(1, 4)):
            # lengths 63 and 64 end a document (with its EOS) exactly at or one past a block end
            length = int(rng.choice([1, 5, 30, SEQ_LEN - 1, SEQ_LEN, 150]))
            documents.append(rng.integers(2, 500, size=length, dtype=np.int32))
            document_commit.append(commit)
    shas = [f"{commit:040x}" for commit in range(commits)]
    weights = [float(w) for w in rng.random(commits)]
    whole = pack(
        np.concatenate(documents),
        np.array([len(d) for d in documents]),
        SEQ_LEN,
        EOS,
        PAD,
    )
    packer = StreamPacker(SEQ_LEN, EOS, PAD)
    tables, start = [], 0
    by_commit = np.array(document_commit)
    while start < commits:
        stop = min(commits, start + int(rng.integers(1, 9)))
        chosen = np.flatnonzero((by_commit >= start) & (by_commit < stop))
        batch = _one_batch(
            [documents[i] for i in chosen],
            by_commit[chosen].tolist(),
            shas[start:stop],
            weights[start:stop],
        )
        batch.first_commit = start
        tables.append(packer.add(batch))
        start = stop
    tables.append(packer.finish())
    rows = pa.concat_tables(tables)
    assert rows.num_rows == len(whole.length) == packer.blocks
    ids = np.array(rows.column("input_ids").to_pylist(), dtype=np.int32)
    positions = np.array(rows.column("position_ids").to_pylist(), dtype=np.int32)
    assert np.array_equal(ids, whole.input_ids)
    assert np.array_equal(positions, whole.position_ids)
    assert np.array_equal(rows.column("length").to_numpy(), whole.length)
    assert packer.stats()["documents_spanning_blocks"] == whole.spanning
    assert packer.stats()["tokens"] == whole.tokens
    first = by_commit[whole.first_document]
    last = by_commit[whole.last_document]
    assert rows.column("shas").to_pylist() == [
        shas[a : b + 1] for a, b in zip(first, last, strict=True)
    ]
    expected = [
        math.fsum(weights[a : b + 1]) / (b - a + 1) for a, b in zip(first, last, strict=True)
    ]
    assert np.allclose(rows.column("weight").to_numpy(), expected)


def test_shard_writer_layout_loads_and_ignores_how_rows_arrive(tmp_path) -> None:
    blocks = pa.table(
        {
            "input_ids": [[i] * 4 for i in range(23)],
            "position_ids": [[0, 1, 2, 3]] * 23,
            "length": pa.array([4] * 23, pa.int32()),
            "weight": pa.array([1.0] * 23, pa.float32()),
            "shas": [[f"{i:040x}"] for i in range(23)],
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
    for seed, size in ((0, 7), (3, 20), (1, 100)):
        drawn = tasks.read_commits(path, tasks.sample_indices(45, size, seed))
        assert drawn == tasks.sample(everything, size, seed)
        streamed = tasks.sampled_code_changes(path, PLAIN, seed, size)
        assert streamed == tasks.code_change_examples(everything, PLAIN, seed, size)
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
