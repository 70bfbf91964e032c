"""shards/preview.md: documents decoded from the shards the tokenize stage wrote, each kind
recognised by its leading markers, special tokens told apart from the same characters as text."""

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk

from repotune.config import resolve_config
from repotune.curate.table import SPLITS
from repotune.models import resolve_model
from repotune.shards.fim import PLAIN_FIM
from repotune.shards.preview import (
    CHANGE_TO_MESSAGE_DOC,
    CONTINUATION,
    FIM_PSM,
    FIM_SPM,
    KINDS,
    MESSAGE_TO_CHANGE_DOC,
    OTHER,
    WHOLE_FILE,
    Decoder,
    documents,
    edge_rows,
    fenced,
    kind_of,
)
from repotune.shards.render import CHANGE_TO_MESSAGE, MESSAGE_TO_CHANGE, PLAIN, render
from repotune.shards.stage import TokenizeSettings, tokenize_stage
from repotune.shards.tokenizer import TextEncoder
from repotune.snapshot.table import SNAPSHOT
from testdata.curated import commit_row, file_change, synthetic_rows, write_curated

SEQ_LEN = 128
PATCH = "@@ -1,2 +1,3 @@\n def f():\n+    x = 1\n     return 2\n"
COMMIT = commit_row("c", "Set x in f", [file_change("pkg/a.py", PATCH)])
EOS = True


@pytest.mark.parametrize(
    ("text", "eos", "kind"),
    [
        (render(COMMIT, CHANGE_TO_MESSAGE, PLAIN), EOS, CHANGE_TO_MESSAGE_DOC),
        (render(COMMIT, MESSAGE_TO_CHANGE, PLAIN), EOS, MESSAGE_TO_CHANGE_DOC),
        # A long commit's first piece goes on in another document: no EOS.
        (render(COMMIT, MESSAGE_TO_CHANGE, PLAIN), not EOS, CONTINUATION),
        # A piece that starts inside the change, and the message cut off from its change.
        ("<|message|>Set x in f\n<|diff|>+    y = 2\n", EOS, CONTINUATION),
        ("<|diff|><|message|>Set x in f\n", EOS, CONTINUATION),
        # A message->change piece of the message alone, a change->message one without it.
        ("<|message|>Set x in f\n\nA long body\n", not EOS, CONTINUATION),
        ("<|diff|>diff --git a/pkg/a.py b/pkg/a.py\n@@ -1 +1 @@\n", not EOS, CONTINUATION),
        # The path before the FIM markers, and inside the prefix (the older layout).
        ("<|file|>pkg/a.py\n<|fim_prefix|>a\n<|fim_suffix|>c\n<|fim_middle|>b\n", EOS, FIM_PSM),
        ("<|file|>pkg/a.py\n<|fim_prefix|><|fim_suffix|>c\n<|fim_middle|>a\nb\n", EOS, FIM_SPM),
        ("<|fim_prefix|><|fim_suffix|>c\n<|fim_middle|><|file|>pkg/a.py\na\nb\n", EOS, FIM_SPM),
        ("<|fim_prefix|><|file|>pkg/a.py\na\n<|fim_suffix|>c\n<|fim_middle|>b\n", EOS, FIM_PSM),
        ("<|file|>pkg/a.py\na\nb\nc\n", EOS, WHOLE_FILE),
        ("def f():\n", EOS, OTHER),
    ],
)
def test_kind_comes_from_the_leading_markers(text, eos, kind):
    assert kind_of(text, eos, PLAIN, PLAIN_FIM) == kind


def test_documents_start_where_positions_restart_and_padding_is_left_out():
    ids = [5, 6, 7, 8, 9, 0, 0]
    positions = [0, 1, 2, 0, 1, 0, 1]  # two documents, then padding counting on its own
    assert documents(ids, positions, 5) == [(0, [5, 6, 7]), (3, [8, 9])]


def test_only_the_first_and_last_blocks_are_read():
    assert edge_rows(5, edge=3) == [0, 1, 2, 3, 4]
    assert edge_rows(10, edge=3) == [0, 1, 2, 7, 8, 9]


def test_a_fence_is_longer_than_any_backticks_inside():
    assert fenced("a ``` b").startswith("````text\n")
    assert fenced("plain") == "```text\nplain\n```"


def _snapshot(path: Path) -> Path:
    content = "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(4))
    rows = [
        {"path": f"pkg/m{n}.py", "language": "Python", "size": len(content),
         "content": content, "blob_sha": f"{n:040x}"}
        for n in range(16)
    ]  # fmt: skip
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SNAPSHOT), path)
    return path


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> Path:
    """The tokenize stage with file documents, one commit quoting a marker in its code."""
    root = tmp_path_factory.mktemp("preview")
    quoting = commit_row(
        "q", "Quote the marker", [file_change("pkg/q.py", '@@ -0,0 +1 @@\n+M = "<|message|>"\n')]
    )
    short = [
        commit_row(f"s{n}", f"Set x in f{n}", [file_change("pkg/a.py", PATCH)]) for n in range(8)
    ]
    rows = [*synthetic_rows(40, seed=1, split="train"), *short, quoting]
    rows += synthetic_rows(8, seed=2, split="validation") + synthetic_rows(6, seed=3, split="test")
    section = {"seq_len": SEQ_LEN, "shard_tokens": 16 * SEQ_LEN}
    out = root / "out"
    tokenize_stage(
        splits=write_curated(root / "dataset", rows),
        tokenizer_dir=out / "tokenizer",
        shard_dirs={split: out / "shards" / split for split in SPLITS},
        stats_path=out / "shards" / "stats.json",
        settings=TokenizeSettings.from_config(resolve_config({"tokenize": section})["tokenize"]),
        model=resolve_model({"preset": "tiny", "bpe_vocab_size": 600}),
        threads=2,
        files=_snapshot(root / "snapshot" / "files.parquet"),
        preview=out / "shards" / "preview.md",
    )
    return out


def test_preview_decodes_every_kind_from_the_written_shards(tokenized):
    text = (tokenized / "shards" / "preview.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (.+?) \| (\d+) \|", text, re.MULTILINE))
    blocks = load_from_disk(str(tokenized / "shards" / "train"))
    read = blocks.select(edge_rows(len(blocks)))
    total = sum(len(documents(r["input_ids"], r["position_ids"], r["length"])) for r in read)
    assert sum(int(count) for count in table.values()) == total  # each document read, once
    for kind in (CHANGE_TO_MESSAGE_DOC, MESSAGE_TO_CHANGE_DOC, FIM_PSM, FIM_SPM, WHOLE_FILE):
        assert int(table[kind]) > 0, kind
        assert f"\n## {kind} 1: block " in text, kind
    assert OTHER not in table
    assert set(table) <= set(KINDS)
    # A shown document is the shard's own ids, decoded: the heading says where they sit.
    heading = re.search(r"## FIM SPM 1: block (\d+), tokens (\d+) to (\d+)", text)
    block, first, last = map(int, heading.groups())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenized / "tokenizer"))
    shown = Decoder(tokenizer).visible(blocks[block]["input_ids"][first : last + 1])
    assert shown in text and "«<|fim_prefix|>»«<|fim_suffix|>»" in shown
    # The evaluation's first test commits, as the commit-message question.
    assert text.count("\n### ") == 3
    assert re.search(r"«<\|diff\|>»diff --git .*«<\|message\|>»\n```", text, re.DOTALL)


def test_special_tokens_and_the_same_characters_as_text_look_different(tokenized):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenized / "tokenizer"))
    decoder = Decoder(tokenizer)
    marker = TextEncoder(tokenizer, PLAIN.markers)(["<|message|>x"])[0]
    as_text = TextEncoder(tokenizer, ())(["<|message|>x"])[0]
    assert decoder.visible(marker) == "«<|message|>»x"
    assert decoder.visible(as_text) == "<|message|>x"
    assert decoder.raw(marker) == decoder.raw(as_text) == "<|message|>x"
