"""The shard contract: the Arrow schema the tokenize stage writes, the columns training and
evaluation read, and the writer, in one module so writer and readers cannot drift apart. The
reader that turns blocks into torch batches is :mod:`repotune.shards.torch_blocks`, apart so
the tokenize stage (and its env, envs/data.yaml) needs no torch.

A block is ``seq_len`` tokens holding one or more packed documents. ``position_ids`` restart at
0 where a document starts; transformers 5 turns such position ids into a block-diagonal causal
mask (``masking_utils.find_packed_sequence_indices``) for every model that builds its mask with
``create_causal_mask`` (GPT-2, StarCoder2, Phi among them) with the sdpa, eager and flash
kernels, provided no attention mask and no cache is passed. So packed documents do not attend
to each other. Labels are -100 on padding (positions >= ``length``) and on each document's
first token, which no earlier token of the same document can predict.

``shas`` lists the commits with a document in a block (each once, in split order: provenance);
``document_shas`` lists the commit of *each* document, in the block's order (the n-th entry is
the document starting at the n-th restart of ``position_ids`` to 0 below ``length``). A block
mixes commits and a long commit spans blocks, so evaluation needs each token's commit to sum
negative log-likelihood per commit and resample commits (repotune.evaluate.perplexity).

Writing (:class:`ShardWriter`): ``datasets.Dataset.save_to_disk`` needs the whole table in
memory before it writes a byte; the writer takes blocks as they are packed and writes a shard
file as soon as it holds ``rows_per_shard`` blocks, leaving what ``save_to_disk`` writes
(``data-XXXXX-of-NNNNN.arrow``, ``state.json``, ``dataset_info.json``) so
``datasets.load_from_disk`` reads it unchanged. Shard boundaries depend only on
``rows_per_shard`` and the rows, never on how the rows were handed in.

docs/data-contracts.md describes the columns.
"""

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
from datasets import Features

from repotune.atomic import atomic_path

SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("position_ids", pa.list_(pa.int32())),
        pa.field("length", pa.int32()),
        pa.field("weight", pa.float32()),
        pa.field("shas", pa.list_(pa.string())),
        pa.field("document_shas", pa.list_(pa.string())),
    ]
)
# The columns training and evaluation read (``shas`` is provenance for people; evaluation
# reads ``document_shas`` on its own, repotune.evaluate.perplexity.document_commits).
COLUMNS = ("input_ids", "position_ids", "length", "weight")
DOCUMENT_SHAS = "document_shas"
IGNORE = -100


# -- writing: blocks -> a datasets directory, one Arrow file at a time --
#
RECORD_BATCH_ROWS = 1000
"""Rows per Arrow record batch inside a shard (``datasets``' own writer batch size)."""


def rows_per_shard(seq_len: int, shard_tokens: int) -> int:
    """Blocks per shard: ``shard_tokens`` token slots, at least one block."""
    return max(1, shard_tokens // seq_len)


class ShardWriter:
    """Writes blocks (tables of :data:`SHARD_SCHEMA` rows) into shard files as they come.

    Use through :func:`shard_directory`; :meth:`write` buffers fewer than ``rows_per_shard``
    rows between calls, :meth:`close` writes the rest and the ``datasets`` metadata.
    """

    def __init__(self, directory: Path, rows_per_shard: int) -> None:
        self.directory = directory
        self.rows_per_shard = rows_per_shard
        self.features = Features.from_arrow_schema(SHARD_SCHEMA)
        self.schema = self.features.arrow_schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._digest = hashlib.sha256()
        self.shards = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Add rows; every full shard is written to disk now."""
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self.rows_per_shard:
            rows = pa.concat_tables(self._pending)
            self._write_shard(rows.slice(0, self.rows_per_shard))
            rest = rows.slice(self.rows_per_shard)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows

    def close(self) -> int:
        """Write the last (short) shard, name the files, write the metadata; return shards."""
        if self._pending_rows or self.shards == 0:
            rows = pa.concat_tables(self._pending) if self._pending else SHARD_SCHEMA.empty_table()
            self._write_shard(rows)
            self._pending, self._pending_rows = [], 0
        names = [f"data-{index:05d}-of-{self.shards:05d}.arrow" for index in range(self.shards)]
        for index, name in enumerate(names):
            os.replace(self._part(index), self.directory / name)
        state = {
            "_data_files": [{"filename": name} for name in names],
            "_fingerprint": self._digest.hexdigest()[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        info = {
            "citation": "",
            "description": "",
            "features": self.features.to_dict(),
            "homepage": "",
            "license": "",
        }
        (self.directory / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        (self.directory / "dataset_info.json").write_text(json.dumps(info, indent=2))
        return self.shards

    def _part(self, index: int) -> Path:
        return self.directory / f"part-{index:05d}.arrow"

    def _write_shard(self, rows: pa.Table) -> None:
        # Copy every column into fresh buffers: a slice would carry its parent's offsets into
        # the file, and the bytes would depend on how the rows were handed in.
        columns = [pa.concat_arrays([pa.array([], c.type), *c.chunks]) for c in rows.columns]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.schema) as stream:
            stream.write_table(table, max_chunksize=RECORD_BATCH_ROWS)
        data = sink.getvalue()
        self._digest.update(data)
        with open(self._part(self.shards), "wb") as handle:
            handle.write(data)
        self.shards += 1
        self.rows += table.num_rows


@contextmanager
def shard_directory(final: str | Path, rows_per_shard: int) -> Iterator[ShardWriter]:
    """A :class:`ShardWriter` filling a temporary directory that becomes ``final`` on success."""
    with atomic_path(final) as temporary:
        temporary.mkdir(parents=True)
        writer = ShardWriter(temporary, rows_per_shard)
        yield writer
        writer.close()
