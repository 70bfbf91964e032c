"""A small code model pretrained here, on local source files, to use as a ``base:``.

:mod:`repotune.pretrain.corpus` lists the files (configured globs, deduplicated, the data
repository left out) and hashes them into the cache key; :mod:`repotune.pretrain.documents`
turns them into packed shards with the tokenize stage's file documents;
:mod:`repotune.pretrain.stage` trains the model with the train stage's trainer (every
parameter, no LoRA) and keeps it in a cache keyed by corpus and settings.
"""
