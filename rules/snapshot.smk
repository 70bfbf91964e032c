rule snapshot:
    input:
        train=rules.curate.output.train,
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
        code=code_of("snapshot"),
    script:
        "../scripts/snapshot.py"
