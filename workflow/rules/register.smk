# Registration of each dataset's evaluation pairs: a folder per run with disp_{fixed}_{moving}.nii.gz (and,
# for inverse-consistent models, their inverses) and runtime.csv (each pair's time and peak memory).


ruleorder: register_greedy > register


rule register:
    input:
        ckpt=f"{RESULTS}/runs/{{dataset}}/{{method}}/{{subset}}/best.pt",
        dataset=lambda w: dataset_json(w.dataset),
    output:
        disp=directory(f"{RESULTS}/disp/{{dataset}}/{{method}}/{{subset}}"),
    params:
        pairs=eval_list,
        device=config["register"]["device"],
    log:
        f"{RESULTS}/logs/register/{{dataset}}/{{method}}/{{subset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/{{method}}/{{subset}}.tsv"
    threads: config["threads"]["register"]
    resources:
        gpu=config["register"].get("gpus", 0),
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench register --checkpoint {input.ckpt} --pairs {input.dataset}:{params.pairs}"
        " --out-dir {output.disp} --device {params.device} --threads {threads} > {log} 2>&1"


rule register_greedy:
    input:
        dataset=lambda w: dataset_json(w.dataset),
    output:
        disp=directory(f"{RESULTS}/disp/{{dataset}}/greedy/all"),
    params:
        pairs=eval_list,
        greedy=lambda w, threads: json.dumps({**config["greedy"], "threads": threads}),
    log:
        f"{RESULTS}/logs/register/{{dataset}}/greedy.log",
    benchmark:
        f"{RESULTS}/benchmarks/register/{{dataset}}/greedy.tsv"
    threads: config["threads"]["greedy"]
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench register --method greedy --greedy-config '{params.greedy}'"
        " --pairs {input.dataset}:{params.pairs} --out-dir {output.disp} > {log} 2>&1"
