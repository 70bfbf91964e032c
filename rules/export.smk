rule export:
    input:
        adapter="results/{model}/adapter",
        base="results/{model}/base",
        tokenizer="results/{model}/tokenizer",
        shard_stats="results/{model}/shards/stats.json",
    output:
        directory("results/{model}/export"),
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
        settings=config["export"],
    script:
        "../scripts/export.py"
