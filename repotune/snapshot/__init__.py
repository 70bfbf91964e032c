"""Stage ``snapshot``: the repository's files as they stood at the train cutoff.

Commits teach a model how the code changes; a model that completes code in an editor also
needs the code as it is. This stage reads every file of the tree of the newest *training*
commit (the cutoff), so nothing from the validation or test periods can leak into training.

Reads: ``results/dataset/train.parquet`` (for the cutoff) and the data repository.
Writes: ``results/snapshot/files.parquet`` (schema in :mod:`repotune.snapshot.table`) and
``results/snapshot/snapshot.json`` (what each filter dropped, what redaction replaced).

Modules: ``stage`` (what ``scripts/snapshot.py`` calls), ``blobs`` (one streaming
``git cat-file --batch`` pass over a tree), ``neardup`` (MinHash near-duplicate files),
``languages`` (file name -> language), ``table`` (the Parquet contract).
"""
