"""Corpus files -> a byte-level BPE and packed shards, with the tokenize stage's own code.

The base learns code as the fine-tuned model later sees a repository's files: each file is a
whole-file or fill-in-the-middle document in the ``plain`` FIM format, its path in the header
(repotune.shards.files), packed into blocks by the same packer and written by the same shard
writer as the tokenize stage (repotune.shards.stream, repotune.shards.table). The tokenizer is
the tiny preset's: a byte-level BPE (repotune.shards.tokenizer.train_bpe) with the ``plain``
commit template's markers and the FIM markers as special tokens, so a model fine-tuned on this
base renders commits and FIM documents with single marker tokens it already knows.
"""

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerFast

from repotune.pretrain.corpus import CorpusFile, read_text
from repotune.pretrain.settings import DocumentSettings
from repotune.progress import Progress
from repotune.shards.files import FileCounts, encode_files
from repotune.shards.fim import PLAIN_FIM
from repotune.shards.render import get_template
from repotune.shards.stream import StreamPacker
from repotune.shards.table import rows_per_shard, shard_directory
from repotune.shards.tokenizer import TextEncoder, train_bpe

log = logging.getLogger("repotune.pretrain")
TEMPLATE = "plain"
BATCH_FILES = 256
SHARD_TOKENS = 4194304


def markers() -> tuple[str, ...]:
    """The special tokens of the base's tokenizer: the commit template's and FIM markers."""
    return (*get_template(TEMPLATE).markers, *PLAIN_FIM.markers)


def bpe_texts(files: Sequence[CorpusFile], sample_bytes: int) -> Iterator[str]:
    """The files' texts, in order, until ``sample_bytes`` are given (0: all)."""
    given = 0
    for item in files:
        if sample_bytes and given >= sample_bytes:
            return
        text = read_text(item)
        given += item.bytes
        yield text


def tokenizer_for(
    files: Sequence[CorpusFile], vocab_size: int, sample_bytes: int
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the first ``sample_bytes`` of ``files``."""
    return train_bpe(bpe_texts(files, sample_bytes), vocab_size, markers())


def _rows(files: Sequence[CorpusFile], progress: Progress) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(files), BATCH_FILES):
        batch = files[start : start + BATCH_FILES]
        yield [
            {"path": item.document_path, "content": read_text(item), "blob_sha": item.sha}
            for item in batch
        ]
        progress.advance(sum(item.bytes for item in batch))


def write_shards(
    files: Sequence[CorpusFile],
    directory: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    settings: DocumentSettings,
    what: str,
) -> dict[str, Any]:
    """Pack ``files`` into a shard directory as the tokenize stage packs snapshot files;
    return the packer's and the file documents' counts."""
    encoder = TextEncoder(tokenizer, PLAIN_FIM.markers)
    packer = StreamPacker(
        settings.seq_len, tokenizer.eos_token_id, tokenizer.pad_token_id, encoder.line_ends
    )
    counts = FileCounts()
    total = sum(item.bytes for item in files)
    progress = Progress(log, f"pretrain: {what} documents", total, "bytes")
    rows = rows_per_shard(settings.seq_len, SHARD_TOKENS)
    with shard_directory(directory, rows) as writer:
        for batch in encode_files(
            _rows(files, progress), PLAIN_FIM, encoder, settings, 0, 1.0, counts
        ):
            writer.write(packer.add(batch))
        writer.write(packer.finish())
    progress.finish()
    return {**packer.stats(), "files": counts.as_dict(), "shards": writer.shards}
