# Evaluation: Learn2Reg / LUMIR metrics of every registered pair, as one tidy CSV per run.


rule evaluate:
    input:
        disp=evaluation_disp,
        dataset=lambda w: dataset_json(w.dataset),
    output:
        csv=f"{RESULTS}/eval/{{dataset}}/{{method}}/{{subset}}.csv",
    params:
        pairs=eval_list,
        label=lambda w: run_of(w).label,
        source=lambda w, input: f"--disp-dir {input.disp}" if input.disp else "--zero",
        labels=lambda w: label_option(config["datasets"][w.dataset]["labels"]),
        ndv_mask=lambda w: config["datasets"][w.dataset]["ndv_mask"],
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{method}}/{{subset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/{{subset}}.tsv"
    threads: config["threads"]["evaluate"]
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench evaluate --pairs {input.dataset}:{params.pairs} {params.source} --method {params.label}"
        " {params.labels} --ndv-mask {params.ndv_mask} --threads {threads} --csv {output.csv} > {log} 2>&1"
