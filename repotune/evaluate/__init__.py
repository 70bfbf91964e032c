"""Stages ``evaluate`` and ``compare_models``: base vs base + adapter on held-out commits.

Reads: ``results/{model}/shards/test/``, ``results/dataset/test.parquet``, the adapter and base.
Writes: ``results/{model}/eval/report.{json,md}``, ``generations.jsonl`` and plots; and, over
every model, ``results/comparison.{md,png}``.

Modules: ``stage`` (what ``scripts/evaluate.py`` calls), ``perplexity``, ``tasks`` (evaluation
examples and their scoring), ``fim``/``fim_tasks``/``fim_questions`` (fill-in-the-middle
questions), ``metrics``, ``behaviour`` (behavioural tests: loading, checks), ``behaviour_eval``
(which generations they check, verdicts, report rows), ``random_text`` (uniform random answers:
the chance baseline), ``null_models`` (empty, echo, random and another commit's answers: the
report's null baselines), ``report``, ``comparison``. Prompts, budgets and decoding are
:mod:`repotune.inference`'s, shared with the ``repotune`` command.
"""
