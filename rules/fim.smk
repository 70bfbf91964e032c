rule fim_questions:
    input:
        test=rules.curate.output.test,
    output:
        questions="results/fim/questions.parquet",
        report="results/fim/fim_questions.json",
    log:
        "logs/fim_questions.log",
    benchmark:
        "benchmarks/out/fim_questions.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 1
    params:
        repo=config["repo"],
        settings=fim_question_settings(),
        code=code_of("fim_questions"),
    script:
        "../scripts/fim_questions.py"
