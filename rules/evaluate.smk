rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        report=report(
            "results/{model}/eval/report.md",
            caption="../report/eval_report.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "report"},
        ),
        json="results/{model}/eval/report.json",
        generations="results/{model}/eval/generations.jsonl",
        loss_curves=report(
            "results/{model}/eval/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "loss curves"},
        ),
        metrics_plot=report(
            "results/{model}/eval/metrics.png",
            caption="../report/metrics.rst",
            category="Evaluation",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "metrics"},
        ),
    log:
        "logs/evaluate_{model}.log",
    benchmark:
        "benchmarks/out/evaluate_{model}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=evaluate_gpus(),
        mem_mb=config["evaluate"]["mem_mb"],
    params:
        settings=result_params("evaluate"),
        redact=config["curate"]["redact"],
        code=code_of("evaluate"),
    script:
        "../scripts/evaluate.py"


rule compare_models:
    input:
        reports=expand(rules.evaluate.output.json, model=model_names()),
    output:
        table=report(
            "results/comparison.md",
            caption="../report/comparison.rst",
            category="Model comparison",
            labels={"figure": "table"},
        ),
        plot=report(
            "results/comparison.png",
            caption="../report/comparison_plot.rst",
            category="Model comparison",
            labels={"figure": "plot"},
        ),
    log:
        "logs/compare_models.log",
    benchmark:
        "benchmarks/out/compare_models.tsv"
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        models=model_names(),
        code=code_of("compare_models"),
    script:
        "../scripts/compare_models.py"
