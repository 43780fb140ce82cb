# LUMIR leaderboard submission: the chosen method's validation displacements, packaged and validated.


rule lumir_submission:
    input:
        runtime=f"{disp_dir(artefact('lumir_submission')['dataset'], artefact('lumir_submission')['method'])}/runtime.csv"
        if is_active("lumir_submission")
        else [],
        dataset=dataset_json(artefact("lumir_submission")["dataset"]) if is_active("lumir_submission") else [],
    output:
        zip=report(f"{RESULTS}/submission/lumir_submission.zip", caption="../report/lumir_submission.rst",
                   category="Submission"),
    params:
        disp=lambda w, input: os.path.dirname(input.runtime),
        pairs=lambda w: config["datasets"][artefact("lumir_submission")["dataset"]]["eval_list"],
        shape=" ".join(str(n) for n in artefact("lumir_submission").get("shape", [160, 224, 192])),
    log:
        f"{RESULTS}/logs/submission/lumir_submission.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench lumir-package --disp-dir {params.disp} --dataset-json {input.dataset}:{params.pairs}"
        " --shape {params.shape} --out {output.zip} > {log} 2>&1"
        " && dirbench lumir-validate {output.zip} --dataset-json {input.dataset}:{params.pairs}"
        " --shape {params.shape} >> {log} 2>&1"
