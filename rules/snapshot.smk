rule snapshot:
    input:
        train="results/dataset/train.parquet",
    output:
        files="results/snapshot/files.parquet",
        report="results/snapshot/snapshot.json",
    log:
        "logs/snapshot.log",
    benchmark:
        "benchmarks/out/snapshot.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 1
    params:
        repo=config["repo"],
        settings=snapshot_settings(),
    script:
        "../scripts/snapshot.py"
