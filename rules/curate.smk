rule curate:
    input:
        commits=rules.extract_commits.output.commits,
    output:
        train="results/dataset/train.parquet",
        validation="results/dataset/validation.parquet",
        test="results/dataset/test.parquet",
        report="results/dataset/curation.json",
    log:
        "logs/curate.log",
    benchmark:
        "benchmarks/out/curate.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        settings=config["curate"],
        code=code_of("curate"),
    script:
        "../scripts/curate.py"
