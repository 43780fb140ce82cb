# LUMIR leaderboard submission: the chosen method's validation displacements, packaged and validated.


rule lumir_submission:
    input:
        disp=if_active(
            "lumir_submission",
            lambda: disp_dir(RunId(artefact("lumir_submission")["dataset"], artefact("lumir_submission")["method"])),
        ),
        dataset=if_active("lumir_submission", lambda: dataset_json(artefact("lumir_submission")["dataset"])),
    output:
        zip=report(
            f"{RESULTS}/submission/lumir_submission.zip", caption="../report/lumir_submission.rst", category="Submission"
        ),
    params:
        pairs=lambda w: config["datasets"][artefact("lumir_submission")["dataset"]]["eval_list"],
        shape=lambda w: " ".join(str(n) for n in artefact("lumir_submission").get("shape", [160, 224, 192])),
    log:
        f"{RESULTS}/logs/submission/lumir_submission.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench lumir-package --disp-dir {input.disp} --dataset-json {input.dataset}:{params.pairs}"
        " --shape {params.shape} --out {output.zip} > {log} 2>&1"
        " && dirbench lumir-validate {output.zip} --dataset-json {input.dataset}:{params.pairs}"
        " --shape {params.shape} >> {log} 2>&1"
