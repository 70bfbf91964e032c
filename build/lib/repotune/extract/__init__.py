"""Stage ``extract_commits``: the data repository's history -> ``results/commits.parquet``.

Reads: the git repository named by ``config.repo`` (``git log --raw -p``, streamed).
Writes: ``results/commits.parquet`` (schema in :mod:`repotune.extract.table`),
``results/commits.stats.json``, and the incremental cache under ``results/cache/``.

Modules: ``stage`` (what ``scripts/extract_commits.py`` calls), ``gitlog`` (parse git's
output), ``table`` (the Parquet contract), ``repository`` (checks and facts about the repo).
"""
