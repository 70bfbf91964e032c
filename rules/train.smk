rule train:
    input:
        train=rules.tokenize.output.train,
        validation=rules.tokenize.output.validation,
        tokenizer=rules.tokenize.output.tokenizer,
    output:
        adapter=directory("results/{model}/adapter"),
        base=directory("results/{model}/base"),
    log:
        "logs/train_{model}.log",
    benchmark:
        "benchmarks/out/train_{model}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=train_gpus(),
        mem_mb=config["train"]["mem_mb"],
    params:
        model=model_entry,
        code=code_of("train"),
        settings=result_params("train"),
        state="results/{model}/train_state",
    script:
        "../scripts/train.py"
