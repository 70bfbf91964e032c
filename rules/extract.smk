rule extract_commits:
    output:
        commits="results/commits.parquet",
        stats="results/commits.stats.json",
    log:
        "logs/extract_commits.log",
    benchmark:
        "benchmarks/out/extract_commits.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 8
    params:
        repo=config["repo"],
        code=code_of("extract_commits"),
        head=resolved_head(),
        settings=config["extract"],
        cache="results/cache/commits.parquet",
    script:
        "../scripts/extract_commits.py"
