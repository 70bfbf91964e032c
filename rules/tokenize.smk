rule tokenize:
    input:
        unpack(tokenize_input),
    output:
        tokenizer=directory("results/{model}/tokenizer"),
        train=directory("results/{model}/shards/train"),
        validation=directory("results/{model}/shards/validation"),
        test=directory("results/{model}/shards/test"),
        stats="results/{model}/shards/stats.json",
        preview="results/{model}/shards/preview.md",
    log:
        "logs/tokenize_{model}.log",
    benchmark:
        "benchmarks/out/tokenize_{model}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    params:
        settings=config["tokenize"],
        code=code_of("tokenize"),
        model=model_spec,
    script:
        "../scripts/tokenize.py"
