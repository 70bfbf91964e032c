rule export:
    input:
        adapter=rules.train.output.adapter,
        base=rules.train.output.base,
        tokenizer=rules.tokenize.output.tokenizer,
        shard_stats=rules.tokenize.output.stats,
    output:
        export=directory("results/{model}/export"),
    log:
        "logs/export_{model}.log",
    benchmark:
        "benchmarks/out/export_{model}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    resources:
        mem_mb=config["evaluate"]["mem_mb"],
    params:
        settings=export_settings(),
        code=code_of("export"),
    script:
        "../scripts/export.py"
