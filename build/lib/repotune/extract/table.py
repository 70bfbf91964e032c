"""The Arrow schema of ``results/commits.parquet``: one row per commit, oldest first.

This is the data contract between extraction and every later stage; docs/data-contracts.md
describes each column for people, and tests check that extraction writes exactly this schema.
"""

import pyarrow as pa

SCHEMA_VERSION = "1"

FILE_CHANGE = pa.struct(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("old_path", pa.string()),
        pa.field("change_type", pa.string(), nullable=False),
        pa.field("old_mode", pa.string()),
        pa.field("new_mode", pa.string()),
        pa.field("similarity", pa.int16()),
        pa.field("additions", pa.int32()),
        pa.field("deletions", pa.int32()),
        pa.field("is_binary", pa.bool_(), nullable=False),
        pa.field("is_submodule", pa.bool_(), nullable=False),
        pa.field("patch", pa.string()),
        pa.field("patch_bytes", pa.int64(), nullable=False),
        pa.field("patch_truncated", pa.bool_(), nullable=False),
    ]
)

UTC_TIME = pa.timestamp("ms", tz="UTC")  # Parquet has no second unit; ms round-trips

COMMITS = pa.schema(
    [
        pa.field("sha", pa.string(), nullable=False),
        pa.field("parents", pa.list_(pa.string()), nullable=False),
        pa.field("is_merge", pa.bool_(), nullable=False),
        pa.field("author_name", pa.string(), nullable=False),
        pa.field("author_email_sha256", pa.string(), nullable=False),
        pa.field("author_email", pa.string()),
        pa.field("author_time", UTC_TIME, nullable=False),
        pa.field("author_utc_offset_minutes", pa.int16(), nullable=False),
        pa.field("committer_name", pa.string(), nullable=False),
        pa.field("committer_time", UTC_TIME, nullable=False),
        pa.field("committer_utc_offset_minutes", pa.int16(), nullable=False),
        pa.field("encoding", pa.string()),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("body", pa.string(), nullable=False),
        pa.field("files", pa.list_(FILE_CHANGE), nullable=False),
        pa.field("files_changed", pa.int32(), nullable=False),
        pa.field("additions", pa.int64(), nullable=False),
        pa.field("deletions", pa.int64(), nullable=False),
        pa.field("patch_bytes", pa.int64(), nullable=False),
    ]
)
