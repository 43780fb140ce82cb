# Training: one run per (dataset, method, training-set subset). last.pt is undeclared on purpose, so a
# failed or killed job (SLURM timeout, preemption) resumes from it when Snakemake retries. A changed
# run_config.yaml retrains the run: a larger `epochs` continues it, any other change that alters the result
# sets the old run aside into stale-<time>/ (`--on-change restart`), naming the changed settings in the log.


# A shell job, not `run:` (which Snakemake executes by re-parsing the whole workflow in a new process).
rule run_config:
    output:
        f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/run_config.yaml",
    params:
        settings=lambda w: yaml.safe_dump(train_settings(w), sort_keys=False),
    log:
        f"{RESULTS}/logs/run_config/{{dataset}}/{{method}}/{{subset}}.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "printf '%s' {params.settings:q} > {output} 2> {log}"


rule train:
    input:
        cfg=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/run_config.yaml",
        dataset=lambda w: dataset_json(w.dataset),
    output:
        best=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/best.pt",
        summary=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/summary.json",
        metrics=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/metrics.csv",
    params:
        out=lambda w, output: os.path.dirname(output.best),
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{method}}/{{subset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{method}}/{{subset}}.tsv"
    threads: config["threads"]["train"]
    resources:
        gpu=config["train"].get("gpus", 0),
        runtime=train_runtime,
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench train --method {wildcards.method} --dataset {input.dataset} --config {input.cfg}"
        " --dataset-name {wildcards.dataset} --out {params.out} --resume --on-change restart"
        " --threads {threads} --no-progress > {log} 2>&1"
