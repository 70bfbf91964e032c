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
        benchmarks=manifest_benchmarks,
        code=manifest_code(),
    script:
        "../scripts/manifest.py"
