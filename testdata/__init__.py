"""Inputs built in code, shared by tests/ and benchmarks/ (neither imports the other).

``gitrepo``: git repositories with chosen commits, dates and authors. ``commits``: hand-written
rows of results/commits.parquet. ``curated``: curated splits and synthetic commits for the
tokenize stage. ``workflow``: the snakemake command line on a fixture repository, dry-run
plans and the small FAST config. ``pretrain``: the size of a base built in about a second.
"""
