"""The Arrow schema of ``results/snapshot/files.parquet``: one row per kept file, by path.

``content`` is the file's text after secret redaction (UTF-8; undecodable bytes become
U+FFFD); ``size`` is the blob's size in bytes before redaction; ``blob_sha`` is git's object
id, so a row can be traced back to ``git cat-file -p <blob_sha>``.
"""

import pyarrow as pa

SNAPSHOT = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
        pa.field("blob_sha", pa.string(), nullable=False),
    ]
)
META_CUTOFF = b"repotune.snapshot.cutoff"
