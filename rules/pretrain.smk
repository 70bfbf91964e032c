# Opt-in (`snakemake --cores all pretrain_base`, `make base`; docs/base.md): a small code model
# pretrained here on local source files, the base of the local-python preset. Not part of
# `rule all`; a model whose base is its output makes tokenize wait for it. The params hold the
# cache key (corpus listing and settings), so a changed corpus or setting reruns the rule,
# which then reuses a cached base when one with that key exists.
rule pretrain_base:
    output:
        model=directory(PRETRAINED_BASE),
        manifest=PRETRAINED_MANIFEST,
    log:
        "logs/pretrain_base.log",
    benchmark:
        "benchmarks/out/pretrain_base.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=min(1, train_gpus()),
        mem_mb=config["pretrain"]["mem_mb"],
    params:
        key=pretrain_key,
        places=PLACES,
        code=code_of("pretrain_base"),
    script:
        "../scripts/pretrain_base.py"
