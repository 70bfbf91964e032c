"""``shards/preview.md``: what the model is trained on and asked, decoded for a person to read.

A metric says how well a model answers; it does not say whether the documents could teach the
answer. This preview (like Axolotl's ``preprocess --debug``) decodes documents from the train
shards as written (never re-rendered) and a few evaluation prompts, so a reader sees each kind
of document and each question as the model sees it: special tokens shown as ``«token»``, so a
marker the template put there and the same characters read as text look different.

Documents are recovered from the blocks: a document starts where ``position_ids`` restart at 0
(repotune.shards.table). Its kind comes from its leading markers
(:func:`kind_of`). Only a bounded number of blocks is decoded, the first and the last of the
split (commits come first, file documents are packed after them), so the preview costs the
same on any history.
"""

import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import load_from_disk

from repotune.atomic import write_text
from repotune.inference.prompts import commit_message_prompt, prompt_encoder
from repotune.inference.record import RunRecord
from repotune.shards.fim import FimFormat
from repotune.shards.render import Template
from repotune.shards.tokenizer import special_tokens

CHANGE_TO_MESSAGE_DOC = "change→message"
MESSAGE_TO_CHANGE_DOC = "message→change"
CONTINUATION = "continuation"
FIM_PSM = "FIM PSM"
FIM_SPM = "FIM SPM"
WHOLE_FILE = "whole file"
OTHER = "other"
KINDS = (
    CHANGE_TO_MESSAGE_DOC,
    MESSAGE_TO_CHANGE_DOC,
    CONTINUATION,
    FIM_PSM,
    FIM_SPM,
    WHOLE_FILE,
    OTHER,
)
KIND_MEANING = {
    CHANGE_TO_MESSAGE_DOC: "a whole commit, its change then its message",
    MESSAGE_TO_CHANGE_DOC: "a commit's message then its change",
    CONTINUATION: (
        "a piece of a commit longer than a block: it ends without EOS (another document "
        "goes on), or starts inside the change rather than at a file's header"
    ),
    FIM_PSM: "fill-in-the-middle, prefix-suffix-middle order",
    FIM_SPM: "fill-in-the-middle, suffix-prefix-middle order",
    WHOLE_FILE: "a file of the snapshot, start to end",
    OTHER: "none of the above (should not happen)",
}
SHORT_TOKENS = 16
EDGE_BLOCKS = 256
SHOWN_PER_KIND = 2
TEST_PROMPTS = 3
SHOWN_CHARS = 2400


@dataclass(frozen=True)
class Document:
    """One document of a block: its token ids and where it sits."""

    block: int
    start: int
    ids: tuple[int, ...]


def documents(
    input_ids: Sequence[int], position_ids: Sequence[int], length: int
) -> list[tuple[int, list[int]]]:
    """``(start, ids)`` of each document of a block: a new one wherever positions restart."""
    starts = [i for i in range(length) if position_ids[i] == 0]
    ends = [*starts[1:], length]
    return [(s, list(input_ids[s:e])) for s, e in zip(starts, ends, strict=True)]


def edge_rows(count: int, edge: int = EDGE_BLOCKS) -> list[int]:
    """The block indices the preview reads: the first and the last ``edge`` of ``count``."""
    if count <= 2 * edge:
        return list(range(count))
    return [*range(edge), *range(count - edge, count)]


def read_documents(shard_dir: str | Path) -> Iterator[Document]:
    """The documents of the blocks :func:`edge_rows` picks, in block order."""
    blocks = load_from_disk(str(shard_dir))
    rows = edge_rows(len(blocks))
    if not rows:
        return
    picked = blocks.select(rows).to_dict()
    for index, row in enumerate(rows):
        ids, positions = picked["input_ids"][index], picked["position_ids"][index]
        for start, doc in documents(ids, positions, picked["length"][index]):
            yield Document(row, start, tuple(doc))


class Decoder:
    """Token ids -> text with every special token shown as ``«token»``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special = {tokenizer.convert_tokens_to_ids(t) for t in special_tokens(tokenizer)}
        self.eos = tokenizer.eos_token_id

    def raw(self, ids: Sequence[int]) -> str:
        """The text as the tokenizer decodes it, special tokens as their plain strings."""
        return self.tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def visible(self, ids: Sequence[int]) -> str:
        """The text with special tokens marked: runs of ordinary ids decode on their own."""
        parts: list[str] = []
        run: list[int] = []
        for token in ids:
            if token in self.special:
                parts.append(self.raw(run) if run else "")
                parts.append(f"«{self.tokenizer.convert_ids_to_tokens(token)}»")
                run = []
            else:
                run.append(token)
        parts.append(self.raw(run) if run else "")
        return "".join(parts)


def file_start(template: Template) -> str:
    """How a file's rendering starts in a commit: its header's first characters."""
    return "<pr_file>" if template.name == "starcoder2" else "diff --git "


def kind_of(text: str, ends_with_eos: bool, template: Template, fmt: FimFormat) -> str:
    """The kind of a document from its decoded text (special tokens as plain strings).

    File documents start with the FIM format's file marker (then, in a FIM document, its
    prefix marker: SPM when the suffix marker follows at once) or, in an older layout, with
    the prefix marker itself. Commit documents start with a task opening; one that ends
    without EOS, or whose change does not start at a file header, is a continuation, and so is
    one that holds only the message, or only the change of a change→message commit.
    """
    body = text.split("\n", 1)[1] if text.startswith(fmt.file) and "\n" in text else text
    if body.startswith(fmt.prefix):
        return FIM_SPM if body[len(fmt.prefix) :].startswith(fmt.suffix) else FIM_PSM
    if text.startswith(fmt.file):
        return WHOLE_FILE
    if text.startswith(template.m2c_open):
        if template.m2c_sep not in text[len(template.m2c_open) :]:
            return CONTINUATION  # the message alone: its change follows in other documents
        change = text[len(template.m2c_open) :].split(template.m2c_sep, 1)[1]
        whole = ends_with_eos and (not change or change.startswith(file_start(template)))
        return MESSAGE_TO_CHANGE_DOC if whole else CONTINUATION
    if text.startswith(template.c2m_open):
        change = text[len(template.c2m_open) :]
        whole = ends_with_eos and change.startswith(file_start(template))
        has_message = template.c2m_sep in change
        return CHANGE_TO_MESSAGE_DOC if whole and has_message else CONTINUATION
    return OTHER


def fenced(text: str) -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def shortened(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text``, or its start and its end (where a commit's message sits) when too long."""
    if len(text) <= limit:
        return text
    head, tail = limit // 3, limit - limit // 3
    return f"{text[:head]}\n[… {len(text) - head - tail} characters not shown …]\n{text[-tail:]}"


@dataclass
class KindStats:
    """What the scan found of one kind."""

    lengths: list[int]
    shown: list[Document]


def scan(
    docs: Iterator[Document], decoder: Decoder, template: Template, fmt: FimFormat
) -> dict[str, KindStats]:
    """Each kind's document lengths and the first :data:`SHOWN_PER_KIND` documents."""
    found = {kind: KindStats([], []) for kind in KINDS}
    for doc in docs:
        ends_with_eos = bool(doc.ids) and doc.ids[-1] == decoder.eos
        kind = kind_of(decoder.raw(doc.ids), ends_with_eos, template, fmt)
        found[kind].lengths.append(len(doc.ids))
        if len(found[kind].shown) < SHOWN_PER_KIND:
            found[kind].shown.append(doc)
    return found


def test_prompts(
    test_commits: str | Path, tokenizer: Any, record: RunRecord
) -> list[tuple[str, list[int]]]:
    """``(sha, ids)`` of the commit-message question of the first test commits, built by the
    inference layer evaluation and ``suggest`` ask through
    (:func:`repotune.inference.prompts.commit_message_prompt`), within the run's prompt budget
    (``record.max_prompt_tokens``; a model whose context is the block length is asked within
    less, leaving room for the answer: report.json ``generation.tasks``)."""
    encoder = prompt_encoder(tokenizer, record)
    columns = ["sha", "subject", "body", "files"]
    batches = pq.ParquetFile(test_commits).iter_batches(batch_size=TEST_PROMPTS, columns=columns)
    commits = next(batches, None)
    return [
        (c["sha"], list(commit_message_prompt(c, record, encoder, record.max_prompt_tokens).ids))
        for c in (commits.to_pylist() if commits is not None else [])
    ]


def render_preview(
    model: str,
    found: Mapping[str, KindStats],
    prompts: Sequence[tuple[str, list[int]]],
    decoder: Decoder,
    facts: Mapping[str, Any],
) -> str:
    """The Markdown of preview.md."""
    lines = [
        f"# What {model} is trained on and asked",
        "",
        f"Decoded from the train shards as written: the first and last {EDGE_BLOCKS} blocks "
        f"of {facts['blocks']} (block length {facts['seq_len']}, template "
        f"`{facts['template']}`, FIM format `{facts['fim']}`). Special tokens are shown as "
        "«token»; every other character is decoded text. Documents are split where "
        "`position_ids` restart.",
        "",
        f"| kind | documents read | median tokens | ≤ {SHORT_TOKENS} tokens | what it is |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        lengths = found[kind].lengths
        if not lengths and kind == OTHER:
            continue
        median = statistics.median(lengths) if lengths else "-"
        short = sum(n <= SHORT_TOKENS for n in lengths)
        lines.append(f"| {kind} | {len(lengths)} | {median} | {short} | {KIND_MEANING[kind]} |")
    for kind in KINDS:
        for number, doc in enumerate(found[kind].shown, 1):
            lines += [
                "",
                f"## {kind} {number}: block {doc.block}, tokens {doc.start} to "
                f"{doc.start + len(doc.ids) - 1} ({len(doc.ids)} tokens)",
                "",
                fenced(shortened(decoder.visible(doc.ids))),
            ]
    lines += [
        "",
        "## Evaluation prompts: the commit-message question of the first test commits",
        "",
        f"Each within {facts['seq_len'] - 1} tokens (the block less one); the model writes the "
        "message after the last marker.",
    ]
    for sha, ids in prompts:
        lines += ["", f"### {sha[:12]} ({len(ids)} tokens)", "", fenced(decoder.visible(ids))]
    return "\n".join(lines) + "\n"


def write_preview(
    path: str | Path,
    model: str,
    train_shards: str | Path,
    test_commits: str | Path,
    tokenizer: Any,
    record: RunRecord,
    fmt: FimFormat,
) -> None:
    """Decode and write ``path`` (results/{model}/shards/preview.md), atomically; ``fmt``: the
    FIM format of the file documents (the record's, or the plain one it would have)."""
    decoder = Decoder(tokenizer)
    template = record.template
    found = scan(read_documents(train_shards), decoder, template, fmt)
    prompts = test_prompts(test_commits, tokenizer, record)
    facts = {
        "blocks": len(load_from_disk(str(train_shards))),
        "seq_len": record.seq_len,
        "template": template.name,
        "fim": fmt.name,
    }
    write_text(path, render_preview(model, found, prompts, decoder, facts))
