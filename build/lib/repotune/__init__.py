"""repotune: turn a git repository's history into a fine-tuned code model.

The package holds the logic of every workflow stage; the Snakemake scripts in ``scripts/``
only read the ``snakemake`` object and call into it, so each stage is importable and
testable without Snakemake.
"""

__version__ = "0.1.0"
