"""The files training writes beside its adapter, by name.

A module of names only, so a stage that reads those files without a model (the manifest, 0.3 s
to start) does not import torch and transformers to learn them (3 s on 2 cores).
"""

BASE_FILE = "base.json"
"""Which base the run trained on (repotune.modeling.base_source)."""

SUMMARY_FILE = "training_summary.json"
"""The run's facts: which base, quantization and dtype it used, steps, epochs, losses."""
