"""The snapshot's files -> whole-file and fill-in-the-middle documents of the training split.

Commits teach a model how the code changes; the files as they stand at the train cutoff
(results/snapshot/files.parquet, the tree of the newest training commit) teach it the code
itself, and FIM documents teach it to fill a gap as an editor asks (repotune.shards.fim).

Each file becomes one document, or, when longer than a block, several: it is cut at line
boundaries into pieces that fit a block with their file header and FIM markers, and each
piece is a document of its own. A piece becomes a FIM document with probability
``fim_rate`` (in SPM order with probability ``fim_spm_rate``), else a whole-file document,
drawn from a hash of the seed and the file's path (and piece), so the documents do not depend
on what else is in the data. Every document ends with EOS, as a commit's does.

The documents reach the packer as :class:`~repotune.shards.stream.DocumentBatch` es whose
"commits" are the files (numbered after the split's commits, a file's pieces sharing its
number, its ``sha`` the blob id), so they are packed with the commits by the same packer.
"""

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from repotune.shards.fim import SPM, FimFormat, fim_example, is_fim, whole_file, whole_file_parts
from repotune.shards.marked import Marked, join, text
from repotune.shards.stream import DocumentBatch
from repotune.shards.tokenizer import TextEncoder

FILE_COLUMNS = ("path", "content", "blob_sha")
KINDS = ("commit", "fim", "whole_file")
FIM_MARKERS = 3
"""Marker tokens a FIM document adds to its piece (prefix, suffix, middle)."""
MIN_ROOM = 8
"""Fewest content tokens a block must leave beside a file's header; files with less are
skipped (a path nearly as long as a block)."""


class FileSettings(Protocol):
    """The ``tokenize:`` keys file documents read (repotune.shards.stage.TokenizeSettings)."""

    seq_len: int
    seed: int
    fim_rate: float
    fim_spm_rate: float


@dataclass
class FileCounts:
    """What became of the snapshot's files (reported in stats.json ``files``)."""

    files: int = 0
    documents: int = 0
    fim_psm: int = 0
    fim_spm: int = 0
    whole_file: int = 0
    long_files: int = 0
    pieces_from_long_files: int = 0
    skipped: int = 0
    tokens: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        counts = {k: v for k, v in vars(self).items() if k != "tokens"}
        return counts | {"tokens": {kind: self.tokens[kind] for kind in KINDS[1:]}}


def _cut(lines: list[str], sizes: list[int], room: int) -> list[str]:
    """Whole lines grouped greedily into pieces of at most ``room`` tokens by ``sizes``; a
    line longer than ``room`` is cut into equal runs of characters."""
    pieces: list[str] = []
    current, used = "", 0
    for line, size in zip(lines, sizes, strict=True):
        if size > room:
            parts = math.ceil(size / room)
            step = math.ceil(len(line) / parts)
            pieces.extend(p for p in (current,) if p)
            pieces.extend(line[at : at + step] for at in range(0, len(line), step))
            current, used = "", 0
        elif used + size > room:
            pieces.append(current)
            current, used = line, size
        else:
            current, used = current + line, used + size
    return [*pieces, current] if current else pieces


def file_pieces(content: str, encoder: TextEncoder, room: int) -> list[str]:
    """``content`` cut at line boundaries into pieces of at most ``room`` tokens each,
    counted line by line (a line too long alone is cut between characters).

    Joining the pieces gives ``content`` back. Tokens can merge across a line boundary, so a
    piece's own encoding may differ from the sum by a token or two: the caller checks the
    documents and cuts again with less room (:func:`file_documents`).
    """
    lines = content.splitlines(keepends=True)
    return _cut(lines, [len(ids) for ids in encoder.plain(lines)], room)


@dataclass(frozen=True)
class FileDocument:
    """One document of a file: its text, kind (``fim`` or ``whole_file``), for FIM its order
    (PSM or SPM), and its text with the format's markers marked (only those become marker ids:
    a marker string in the code or the path stays text)."""

    text: str
    kind: str
    mode: str | None
    parts: Marked


def render_piece(
    path: str, piece: str, key: str, fmt: FimFormat, settings: FileSettings, fim: bool = True
) -> FileDocument:
    """A piece of a file as a FIM document (probability ``settings.fim_rate``, drawn from
    the seed and ``key``; never when ``fim`` is false) or a whole-file one; both start with
    the file's header."""
    if fim and is_fim(settings.seed, key, settings.fim_rate):
        example = fim_example(path, piece, fmt, settings.seed, settings.fim_spm_rate, key)
        parts = join(example.parts, text(example.middle))
        return FileDocument(example.prompt + example.middle, "fim", example.mode, parts)
    return FileDocument(
        whole_file(path, piece, fmt), "whole_file", None, whole_file_parts(path, piece, fmt)
    )


def file_documents(
    path: str, content: str, fmt: FimFormat, encoder: TextEncoder, settings: FileSettings
) -> list[tuple[FileDocument, list[int]]] | None:
    """The documents of one file with their ids, each at most ``seq_len - 1`` tokens (EOS
    follows); None when its header leaves a block no room.

    A file that fits is one document keyed by its path; a longer one is cut into pieces
    (:func:`file_pieces`), keyed ``path#n``. Should a piece's document still not fit (tokens
    merging across lines), the file is cut again with half the room. Should not even pieces
    cut with a token's room fit as FIM documents (a tokenizer without the FIM markers as
    tokens spells each as a dozen tokens of text), the file gets whole-file documents only.
    """
    room = settings.seq_len - 1 - len(encoder.marked([whole_file_parts(path, "", fmt)])[0])
    room -= FIM_MARKERS
    if room < MIN_ROOM:
        return None
    made = _fitted(path, content, fmt, encoder, settings, room, fim=True)
    if made is None:
        made = _fitted(path, content, fmt, encoder, settings, room, fim=False)
    return made


def _fitted(
    path: str,
    content: str,
    fmt: FimFormat,
    encoder: TextEncoder,
    settings: FileSettings,
    room: int,
    fim: bool,
) -> list[tuple[FileDocument, list[int]]] | None:
    """The documents of ``content`` whole, else of its pieces cut with ``room`` tokens, then
    with half that, and so on: the first that all fit ``seq_len - 1`` tokens; None when
    pieces cut with one token's room do not (cutting again would give the same pieces)."""
    max_tokens = settings.seq_len - 1
    pieces, cut_with = [content], None
    while True:
        keys = [path] if len(pieces) == 1 else [f"{path}#{n}" for n in range(len(pieces))]
        documents = [
            render_piece(path, piece, key, fmt, settings, fim)
            for piece, key in zip(pieces, keys, strict=True)
        ]
        ids = encoder.marked([document.parts for document in documents])
        if all(len(i) <= max_tokens for i in ids):
            return list(zip(documents, ids, strict=True))
        if cut_with == 1:
            return None
        pieces, cut_with = file_pieces(content, encoder, room), room
        room = max(1, room // 2)


def encode_files(
    rows_batches: Iterable[list[dict[str, Any]]],
    fmt: FimFormat,
    encoder: TextEncoder,
    settings: FileSettings,
    first: int,
    weight: float,
    counts: FileCounts,
) -> Iterator[DocumentBatch]:
    """The file documents of the snapshot's rows (``FILE_COLUMNS``, a batch at a time) as
    batches for the packer, files numbered from ``first`` on (after the split's commits),
    each with recency weight ``weight``."""
    number = first
    for rows in rows_batches:
        documents: list[list[int]] = []
        owners: list[int] = []
        shas: list[str] = []
        for row in rows:
            if not row["content"].strip():
                continue
            made = file_documents(row["path"], row["content"], fmt, encoder, settings)
            if made is None:
                counts.skipped += 1
                continue
            counts.files += 1
            if len(made) > 1:
                counts.long_files += 1
                counts.pieces_from_long_files += len(made)
            for document, ids in made:
                counts.documents += 1
                counts.tokens[document.kind] += len(ids) + 1  # EOS
                if document.kind == "whole_file":
                    counts.whole_file += 1
                elif document.mode == SPM:
                    counts.fim_spm += 1
                else:
                    counts.fim_psm += 1
                documents.append(ids)
                owners.append(number)
            shas.append(row["blob_sha"])
            number += 1
        if not shas:
            continue
        lengths = [len(d) for d in documents]
        yield DocumentBatch(
            tokens=np.fromiter(
                itertools.chain.from_iterable(documents), dtype=np.int32, count=sum(lengths)
            ),
            lengths=np.asarray(lengths, dtype=np.int64),
            commits=np.asarray(owners, dtype=np.int64),
            long=[],
            shas=shas,
            weights=[weight] * len(shas),
            first_commit=number - len(shas),
        )
