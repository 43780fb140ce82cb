# Dataset preparation: one rule per configured dataset, each writing <path>/dataset.json.


for _name, _ds in config["datasets"].items():

    rule:
        name:
            f"data_{_name}"
        output:
            dataset=f"{_ds['path']}/dataset.json",
        params:
            args=prepare_args(_ds),
        log:
            f"{RESULTS}/logs/data/{_name}.log",
        benchmark:
            f"{RESULTS}/benchmarks/data/{_name}.tsv"
        threads: config["threads"]["data"]
        conda:
            "../envs/dirbench.yaml"
        shell:
            "dirbench data {params.args} > {log} 2>&1"
