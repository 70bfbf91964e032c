rule extract_commits:
    output:
        commits="results/commits.parquet",
        stats="results/commits.stats.json",
    params:
        repo=config["repo"],
        head=resolved_head(),
        settings=config["extract"],
        cache="results/cache/commits.parquet",
    log:
        "logs/extract_commits.log",
    benchmark:
        "benchmarks/out/extract_commits.tsv"
    threads: 2
    conda:
        "../envs/extract.yaml"
    script:
        "../scripts/extract_commits.py"
