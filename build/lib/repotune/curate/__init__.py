"""Stage ``curate``: commits -> a filtered, redacted, time-split dataset.

Reads: ``results/commits.parquet``.
Writes: ``results/dataset/{train,validation,test}.parquet`` (schema in
:mod:`repotune.curate.table`) and ``results/dataset/curation.json`` (what each filter dropped).

Modules: ``stage`` (what ``scripts/curate.py`` calls), ``filters`` (which commits and files
teach something), ``redact`` (secrets and e-mails out), ``timesplit`` (split by time, recency
weights), ``table`` (the Parquet contract).
"""
