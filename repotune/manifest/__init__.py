"""Stage ``manifest``: what produced a model, and a hash of every artifact of its run.

Reads: every output of the run for one model, and the per-stage benchmark TSVs.
Writes: ``results/{model}/manifest.json``; ``python -m repotune.manifest.verify`` rechecks it.

Modules: ``stage`` (what ``scripts/manifest.py`` calls), ``verify``, ``params`` (the rule's
params in canonical order).
"""
