rule manifest:
    input:
        unpack(manifest_inputs),
    output:
        manifest="results/{model}/manifest.json",
    log:
        "logs/manifest_{model}.log",
    benchmark:
        "benchmarks/out/manifest_{model}.tsv"
    conda:
        "../envs/manifest.yaml"
    threads: 1
    params:
        config=manifest_config,
        roots=manifest_roots,
        benchmarks=manifest_benchmarks,
        training_summary="results/{model}/adapter/training_summary.json",
        eval_report="results/{model}/eval/report.json",
    script:
        "../scripts/manifest.py"
