# repotune: a git repository's history -> a fine-tuned code model.
# Stages: extract_commits -> curate (-> snapshot, fim_questions) -> tokenize -> train -> evaluate,
#   export
#   -> manifest.
# Run: snakemake --cores 8 [--use-conda]; see README.md.
# Opt-in: snakemake --cores all pretrain_base, a base pretrained on local files (docs/base.md).


configfile: f"{workflow.basedir}/config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/runlock.smk"
include: "rules/extract.smk"
include: "rules/curate.smk"
include: "rules/snapshot.smk"
include: "rules/tokenize.smk"
include: "rules/train.smk"
include: "rules/fim.smk"
include: "rules/evaluate.smk"
include: "rules/export.smk"
include: "rules/manifest.smk"
include: "rules/pretrain.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
