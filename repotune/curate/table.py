"""The Arrow schema of ``results/dataset/{train,validation,test}.parquet``.

The curated commits keep every column of ``results/commits.parquet`` (docs/data-contracts.md),
after redaction and file filtering, plus the two columns training needs: which split a row
belongs to and how much it weighs.
"""

import pyarrow as pa

from repotune.extract.table import COMMITS

# The dataset's splits, in time order; each is one Parquet file and, after tokenize, one
# folder of shards.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

DATASET = pa.schema(
    [
        *COMMITS,
        pa.field("recency_weight", pa.float64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)
