# repotune: a git repository's history -> a fine-tuned code model.
# Stages: extract_commits -> curate -> tokenize -> train -> evaluate -> manifest.
# Run: snakemake --cores 8 [--use-conda]; see README.md.


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/extract.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
