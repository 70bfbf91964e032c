"""Stages ``evaluate`` and ``compare_models``: base vs base + adapter on held-out commits.

Reads: ``results/{model}/shards/test/``, ``results/dataset/test.parquet``, the adapter and base.
Writes: ``results/{model}/eval/report.{json,md}``, ``generations.jsonl`` and plots; and, over
every model, ``results/comparison.{md,png}``.

Modules: ``stage`` (what ``scripts/evaluate.py`` calls), ``perplexity``, ``tasks`` (evaluation
examples and their scoring), ``fim``/``fim_tasks``/``fim_questions`` (fill-in-the-middle
questions), ``metrics``, ``behaviour`` (behavioural tests), ``report``, ``comparison``. Prompts,
budgets and decoding are :mod:`repotune.inference`'s, shared with the ``repotune`` command.
"""
