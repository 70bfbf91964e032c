"""The tokenize stage end to end: curated Parquet in, tokenizer + Arrow shards + stats out."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer

from repotune.config import resolve_config
from repotune.curate.table import SPLITS
from repotune.errors import InputError
from repotune.models import resolve_model
from repotune.shards.packing import layout, min_document
from repotune.shards.render import (
    CHANGE_TO_MESSAGE,
    get_template,
    message_text,
    render,
    subject_only,
    task_for,
    task_header,
)
from repotune.shards.stage import TokenizeSettings, tokenize_stage
from repotune.shards.stream import Window, block_rows
from repotune.shards.table import SHARD_SCHEMA
from repotune.shards.tokenizer import EOS
from testdata.curated import (
    STARCODER2_SPECIAL,
    commit_row,
    file_change,
    save_hub_like_tokenizer,
    synthetic_rows,
    write_curated,
)

SEQ_LEN = 256


def _settings(**overrides) -> TokenizeSettings:
    section = {"seq_len": SEQ_LEN, "shard_tokens": 16 * SEQ_LEN, **overrides}
    return TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"])


def _run(root: Path, rows: list[dict], model, settings: TokenizeSettings) -> dict:
    inputs = write_curated(root / "dataset", rows)
    out = root / "out"
    return tokenize_stage(
        splits=inputs,
        tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards" / "stats.json",
        settings=settings,
        model=model,
        threads=2,
    )


def _rows() -> list[dict]:
    return synthetic_rows(150, seed=1, split="train") + synthetic_rows(25, 2, "validation")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenize")
    model = resolve_model({"preset": "tiny", "bpe_vocab_size": 600})
    stats = _run(root, _rows(), model, _settings())
    return root, stats


def _decode(tokenizer, ids) -> str:
    return tokenizer.backend_tokenizer.decode(list(ids), skip_special_tokens=False)


def test_shards_load_with_the_contract_columns(stage) -> None:
    root, stats = stage
    train = load_from_disk(str(root / "out" / "shards" / "train"))
    assert train.data.schema.remove_metadata() == SHARD_SCHEMA
    assert stats["splits"]["train"]["shards"] > 1
    assert len(list((root / "out" / "shards" / "train").glob("*.arrow"))) > 1
    assert all(len(row) == SEQ_LEN for row in train["input_ids"])
    assert all(len(row) == SEQ_LEN for row in train["position_ids"])
    assert len(load_from_disk(str(root / "out" / "shards" / "test"))) == 0


def test_stats_match_the_shards(stage) -> None:
    root, stats = stage
    assert json.loads((root / "out" / "shards" / "stats.json").read_text()) == stats
    for split in SPLITS:
        data = load_from_disk(str(root / "out" / "shards" / split))
        figures = stats["splits"][split]
        lengths = np.asarray(data["length"], dtype=np.int64)
        assert figures["blocks"] == len(data)
        assert figures["tokens"] == lengths.sum()
        assert figures["token_slots"] == len(data) * SEQ_LEN
        if len(data):
            assert figures["packing_efficiency"] == round(lengths.sum() / (len(data) * SEQ_LEN), 6)
            assert (lengths <= SEQ_LEN).all()
    train = stats["splits"]["train"]
    assert train["commits"] == 150 and train["commits_split"] > 0
    assert train["documents"] > train["commits"]
    assert sum(train["tasks"].values()) == 150
    # Documents are packed whole, and these synthetic commits are all longer than a
    # 256-token block; benchmarks/packing.py measures >= 99% on a real-sized history.
    assert train["packing_efficiency"] > 0.9
    assert stats["template"]["name"] == "plain" and stats["template"]["description"]
    assert stats["tokenizer"]["vocab_size"] == 600 and stats["tokens_per_second"] > 0
    assert stats["tokens"] == sum(s["tokens"] for s in stats["splits"].values())


def _documents(tokenizer, row, shorter: int | None = None) -> list[str]:
    """A block's documents (its real tokens cut where positions restart), decoded; only those
    of fewer than ``shorter`` tokens when given."""
    ids, positions = row["input_ids"][: row["length"]], row["position_ids"][: row["length"]]
    starts = [i for i, position in enumerate(positions) if position == 0]
    bounds = list(zip(starts, [*starts[1:], len(ids)], strict=True))
    for a, z in bounds:
        assert positions[a:z] == list(range(z - a))
    return [_decode(tokenizer, ids[a:z]) for a, z in bounds if shorter is None or z - a < shorter]


def test_blocks_hold_whole_documents_with_eos_only_at_a_commits_end(stage) -> None:
    root, stats = stage
    tokenizer = AutoTokenizer.from_pretrained(str(root / "out" / "tokenizer"))
    assert tokenizer.eos_token == EOS and tokenizer.eos_token_id == stats["tokenizer"]["eos_id"]
    template = get_template(stats["template"]["name"])
    for split in ("train", "validation"):
        rows = [row for row in _rows() if row["split"] == split]
        data = load_from_disk(str(root / "out" / "shards" / split))
        documents = [text for block in data for text in _documents(tokenizer, block)]
        assert len(documents) == stats["splits"][split]["documents"] > len(rows)
        # One EOS per commit, at the end of its last document; never inside a commit.
        assert sum(text.count(EOS) for text in documents) == len(rows)
        assert all(EOS not in text[: -len(EOS)] for text in documents)
        # Every document, continuations included, starts with its task's header.
        assert all(text.startswith(("<|message|>", "<|diff|>")) for text in documents)
        whole = set(documents)
        cut = long_messages = 0
        for row in rows:
            task = task_for(row["sha"], 0.5, 0)
            text = render(row, task, template)
            if text + EOS in whole:
                continue  # a commit that fits a block is one document
            if task == CHANGE_TO_MESSAGE:
                # One document: the change cut to fit, with marks, then the message whole
                # (its subject alone when the whole would take over half the block).
                messages = {message_text(row), message_text(subject_only(row))}
                ends = tuple(f"<|message|>{message}{EOS}" for message in messages)
                [document] = [d for d in documents if d.endswith(ends)]
                assert document.startswith("<|diff|>diff --git ")
                assert " not shown ...\n" in document
                cut += 1
                continue
            # A long message->change commit: its first document starts with its message
            # whole (its subject alone when that is over half the block) and goes on with
            # the change; one document ends with the rendering's end and EOS.
            questions = [
                r[: r.index("<|diff|>") + len("<|diff|>")]
                for r in (text, render(subject_only(row), task, template))
            ]
            opening = [doc for doc in documents if doc.startswith(tuple(questions))]
            assert [doc for doc in opening if template.m2c_sep + "diff --git " in doc]
            long_messages += not any(doc.startswith(questions[0]) for doc in opening)
            assert any(doc.endswith(text[-10:] + EOS) for doc in documents)
        assert cut == stats["splits"][split]["change_to_message_cut"]["changes_cut"] > 0
        assert long_messages == stats["splits"][split]["message_to_change_subject_only"]
        # No document is shorter than the floor, but a commit that is short as a whole.
        floor = min_document(SEQ_LEN)
        short = [text for block in data for text in _documents(tokenizer, block, floor)]
        assert all(text in whole and text.endswith(EOS) for text in short)
        assert all(text.count("<|diff|>") == 1 for text in short)


def test_positions_restart_at_documents_and_weights_and_shas_follow_commits(stage) -> None:
    root, _ = stage
    tokenizer = AutoTokenizer.from_pretrained(str(root / "out" / "tokenizer"))
    rows = {row["sha"]: row for row in _rows()}
    order = list(rows)
    data = load_from_disk(str(root / "out" / "shards" / "train"))
    for row in data:
        assert row["position_ids"][0] == 0
        _documents(tokenizer, row)  # positions count up within each document
        weights = [rows[sha]["recency_weight"] for sha in row["shas"]]
        # A token-weighted mean of its commits' weights (test_block_weight_counts_tokens...).
        assert min(weights) - 1e-6 <= row["weight"] <= max(weights) + 1e-6
        if len(set(weights)) == 1:
            assert row["weight"] == pytest.approx(weights[0], rel=1e-6)
        positions = [order.index(sha) for sha in row["shas"]]
        assert positions == sorted(set(positions))
    shas = {sha for row in data for sha in row["shas"]}
    assert shas == {sha for sha, row in rows.items() if row["split"] == "train"}


def test_document_shas_name_each_documents_commit_in_block_order(stage) -> None:
    """Evaluation sums each token's loss into its commit: the n-th entry of a block's
    ``document_shas`` must be the commit of the document at the n-th position restart. A
    commit that fits a block is exactly its rendering + EOS; a long one's documents, spread over
    blocks, start with its rendering's start and end (one EOS) with its end."""
    root, stats = stage
    tokenizer = AutoTokenizer.from_pretrained(str(root / "out" / "tokenizer"))
    template = get_template(stats["template"]["name"])
    for split in ("train", "validation"):
        rows = {row["sha"]: row for row in _rows() if row["split"] == split}
        data = load_from_disk(str(root / "out" / "shards" / split))
        by_commit: dict[str, list[str]] = {}
        mixed = 0
        for block in data:
            documents = _documents(tokenizer, block)
            assert len(block["document_shas"]) == len(documents)
            assert set(block["document_shas"]) == set(block["shas"])
            mixed += len(set(block["document_shas"])) > 1
            for sha, text in zip(block["document_shas"], documents, strict=True):
                by_commit.setdefault(sha, []).append(text)
        assert set(by_commit) == set(rows) and mixed > 0
        spanning = 0
        for sha, texts in by_commit.items():
            rendering = render(rows[sha], task_for(sha, 0.5, 0), template)
            assert sum(text.count(EOS) for text in texts) == 1
            if len(texts) == 1 and "not shown ...\n" in texts[0]:  # a change cut to fit
                whole, subject = message_text(rows[sha]), rows[sha]["subject"] + "\n"
                assert texts[0].startswith(rendering[:9])
                assert texts[0].endswith((whole + EOS, f"<|message|>{subject}{EOS}"))
            elif len(texts) == 1:
                assert texts == [rendering + EOS]
            else:
                spanning += 1
                header = task_header(rows[sha], task_for(sha, 0.5, 0), template)
                assert any(rendering.startswith(text) for text in texts) or all(
                    text.startswith(header)
                    for text in texts  # a long message gave way
                )
                assert any(text.endswith(rendering[-10:] + EOS) for text in texts)
        assert split == "validation" or spanning > 0


def test_document_shas_follow_the_layout_not_the_document_index() -> None:
    """Documents are laid out in a block by commit, then index: a long commit's piece (a later
    index, an earlier commit) comes first. document_shas must follow the layout."""
    # Documents: 0 = commit 2 whole (ids 20..), 1 = commit 0's last piece (ids 0..), 2 = commit
    # 1 whole, alone in block 1 (given as block 5: layout renumbers).
    lengths = np.array([3, 2, 4])
    tokens = np.array([20, 21, 22, 0, 1, 10, 11, 12, 13], dtype=np.int32)
    commits = np.array([2, 0, 1])
    ends = np.ones(3, dtype=bool)
    blocks = layout(tokens, lengths, ends, np.array([0, 0, 5]), 8, eos_id=99, pad_id=98,
                    order=commits)  # fmt: skip
    window = Window(blocks, commits, lengths + ends)
    shas = ["a" * 40, "b" * 40, "c" * 40]
    table = block_rows(window, shas, [1.0, 1.0, 1.0], first=0).to_pylist()
    assert [row["document_shas"] for row in table] == [["a" * 40, "c" * 40], ["b" * 40]]
    first = table[0]
    starts = [i for i, p in enumerate(first["position_ids"][: first["length"]]) if p == 0]
    assert [first["input_ids"][i] for i in starts] == [0, 20]  # commit 0's piece, then 2's
    assert table[0]["shas"] == ["a" * 40, "c" * 40]


def test_stage_is_deterministic(stage, tmp_path) -> None:
    root, _ = stage
    model = resolve_model({"preset": "tiny", "bpe_vocab_size": 600})
    _run(tmp_path, _rows(), model, _settings())
    first = (root / "out" / "tokenizer" / "tokenizer.json").read_bytes()
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").read_bytes() == first
    for split in SPLITS:
        again = load_from_disk(str(tmp_path / "out" / "shards" / split)).data.table
        assert again.equals(load_from_disk(str(root / "out" / "shards" / split)).data.table)


def test_hub_tokenizer_with_starcoder2_tokens_gets_the_starcoder2_template(tmp_path) -> None:
    path = save_hub_like_tokenizer(tmp_path / "hub", STARCODER2_SPECIAL)
    model = resolve_model({"name": "sc2", "base": str(path), "template": "starcoder2"})
    rows = synthetic_rows(30, seed=6, split="train") + synthetic_rows(5, 7, "test")
    stats = _run(tmp_path, rows, model, _settings(message_to_change=1.0))
    assert stats["template"] == {
        "name": "starcoder2",
        "requested": "starcoder2",
        "description": get_template("starcoder2").description,
    }
    assert stats["tokenizer"]["pad_id"] == stats["tokenizer"]["eos_id"]
    assert stats["splits"]["train"]["tasks"] == {"message_to_change": 30, "change_to_message": 0}
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out" / "tokenizer"))
    first = load_from_disk(str(tmp_path / "out" / "shards" / "train"))[0]["input_ids"]
    assert first[0] == tokenizer.convert_tokens_to_ids("<pr>")


def test_special_token_strings_in_commits_stay_text(tmp_path) -> None:
    """An ML repository's commit that mentions <|endoftext|> must not end its document."""
    rows = _rows()
    leaky = commit_row(
        "leaky",
        f"Strip {EOS} and <|message|> from prompts",
        [file_change("gen.py", f"@@ -1 +1 @@\n-STOP = None\n+STOP = '{EOS}'\n")],
        body=f"The model emitted {EOS} mid-sentence.",
    )
    rows.insert(3, leaky)
    stats = _run(
        tmp_path, rows, resolve_model({"preset": "tiny", "bpe_vocab_size": 600}), _settings()
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "out" / "tokenizer"))
    train = load_from_disk(str(tmp_path / "out" / "shards" / "train"))
    ids = np.concatenate(
        [
            np.asarray(row[:length])
            for row, length in zip(train["input_ids"], train["length"], strict=True)
        ]
    )
    commits = stats["splits"]["train"]["commits"]
    assert int(np.count_nonzero(ids == tokenizer.eos_token_id)) == commits
    text = _decode(tokenizer, ids)
    template = get_template(stats["template"]["name"])
    marker = template.markers[0]
    assert render(leaky, task_for(leaky["sha"], 0.5, 0), template) + EOS in text
    assert text.count(f"STOP = '{EOS}'") == 1 and marker in text


def test_missing_columns_are_an_input_error(tmp_path) -> None:
    paths = write_curated(tmp_path / "dataset", synthetic_rows(5))
    pq.write_table(pa.table({"sha": ["x"]}), paths["validation"])
    model = resolve_model({"preset": "tiny", "bpe_vocab_size": 600})
    with pytest.raises(InputError, match=r"validation\.parquet.*lacks column"):
        tokenize_stage(
            paths,
            tmp_path / "tok",
            {split: tmp_path / split for split in SPLITS},
            tmp_path / "stats.json",
            _settings(),
            model,
        )
    assert not (tmp_path / "stats.json").exists() and not (tmp_path / "tok").exists()


def test_an_empty_training_split_is_an_input_error(tmp_path) -> None:
    model = resolve_model({"preset": "tiny", "bpe_vocab_size": 600})
    with pytest.raises(InputError, match="has no commits"):
        _run(tmp_path, synthetic_rows(5, split="test"), model, _settings())
    assert not (tmp_path / "out").exists()
