"""Stage ``tokenize``: curated splits -> a tokenizer and packed Arrow shards.

(Named ``shards`` so that the package never shadows Python's own ``tokenize`` module.)

Reads: ``results/dataset/{train,validation,test}.parquet``.
Writes: ``results/{model}/tokenizer/``, ``results/{model}/shards/{split}/`` (Arrow blocks of
exactly ``seq_len`` tokens) and ``results/{model}/shards/stats.json``.

Modules: ``stage`` (what ``scripts/tokenize.py`` calls), ``render`` (commit -> text, shared
with evaluation), ``tokenizer`` (load or train a tokenizer; encode text), ``prompt`` (a
commit's token ids: continuation contexts, and ``prompt_ids`` for evaluation and inference),
``packing`` (long commits -> documents, documents -> blocks), ``stream`` (windowed packing of
the encoded stream), ``table`` (the shard schema, its writer, and the reader training and
evaluation load blocks with).
"""
