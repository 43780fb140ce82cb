# Registration of each dataset's evaluation pairs: disp_{fixed}_{moving}.nii.gz + runtime.csv per method.


ruleorder: register_greedy > register


rule register:
    input:
        ckpt=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/best.pt",
        dataset=lambda w: dataset_json(w.dataset),
    output:
        runtime=f"{RESULTS}/disp/{{dataset}}/{{method}}/{{subset}}/runtime.csv",
    params:
        pairs=eval_list,
        out=lambda w, output: os.path.dirname(output.runtime),
        device=config["register"]["device"],
    log:
        f"{RESULTS}/logs/register/{{dataset}}/{{method}}/{{subset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/{{method}}/{{subset}}.tsv"
    threads: 2
    resources:
        gpu=config["register"].get("gpus", 0),
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench register --checkpoint {input.ckpt} --pairs {input.dataset}:{params.pairs}"
        " --out-dir {params.out} --device {params.device} --threads {threads} > {log} 2>&1"


rule register_greedy:
    input:
        dataset=lambda w: dataset_json(w.dataset),
    output:
        runtime=f"{RESULTS}/disp/{{dataset}}/greedy/all/runtime.csv",
    params:
        pairs=eval_list,
        out=lambda w, output: os.path.dirname(output.runtime),
        greedy=lambda w, threads: json.dumps({**config["greedy"], "threads": threads}),
    log:
        f"{RESULTS}/logs/register/{{dataset}}/greedy.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/greedy.tsv"
    threads: 2
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench register --method greedy --greedy-config '{params.greedy}'"
        " --pairs {input.dataset}:{params.pairs} --out-dir {params.out} > {log} 2>&1"
