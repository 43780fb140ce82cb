# The paper's artefacts: tables (LaTeX / CSV / Markdown), figures (PDF / PNG), learning curves and the cost
# table. Every input list goes through if_active(), so an inactive artefact needs nothing.


rule table:
    input:
        unpack(table_inputs),
    output:
        report(table_files("{table}")[0], caption="../report/table.rst", category="Tables"),
        table_files("{table}")[1:],
    wildcard_constraints:
        table="|".join(ARTEFACT_TABLES),
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
    log:
        f"{RESULTS}/logs/tables/{{table}}.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench table --kind {wildcards.table} --csv {input.csv} --summary {input.summaries}"
        " --out {params.prefix} > {log} 2>&1"


rule learning_curves:
    input:
        summaries=lambda w: [summary(r) for r in trained(artefact_runs(w.table))],
        metrics=lambda w: [f"{run_dir(r)}/metrics.csv" for r in trained(artefact_runs(w.table))],
    output:
        report(figure_files("curves_{table}")[0], caption="../report/learning_curves.rst", category="Training"),
        figure_files("curves_{table}")[1],
    wildcard_constraints:
        table="|".join(ARTEFACT_TABLES),
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
    log:
        f"{RESULTS}/logs/figures/curves_{{table}}.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure curves --summary {input.summaries} --out {params.prefix} > {log} 2>&1"


rule cost:
    input:
        summaries=if_active("cost", lambda: [summary(r) for r in trained(artefact_runs("table1"))]),
        disp=if_active("cost", lambda: [disp_dir(r) for r in artefact_runs("table1") if r.method != "initial"]),
    output:
        report(table_files("cost")[0], caption="../report/cost.rst", category="Tables"),
        table_files("cost")[1:],
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
        runtimes=lambda w, input: [f"{d}/runtime.csv" for d in input.disp],
    log:
        f"{RESULTS}/logs/tables/cost.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench cost-table --summary {input.summaries} --runtime {params.runtimes} --out {params.prefix} > {log} 2>&1"


rule fig_b2_scaling:
    input:
        csv=if_active("fig_b2_scaling", lambda: [eval_csv(r) for r in artefact_runs("fig_b2_scaling")]),
        reference=if_active("fig_b2_scaling", lambda: eval_csv(reference_run("fig_b2_scaling"))),
        summaries=if_active(
            "fig_b2_scaling", lambda: [summary(r) for r in trained(artefact_runs("fig_b2_scaling"))]
        ),
    output:
        report(figure_files("fig_b2_scaling")[0], caption="../report/fig_b2_scaling.rst", category="Figures"),
        figure_files("fig_b2_scaling")[1],
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
    log:
        f"{RESULTS}/logs/figures/fig_b2_scaling.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure scaling --csv {input.csv} --reference {input.reference} --summary {input.summaries}"
        " --out {params.prefix} > {log} 2>&1"


rule fig_b2_trainsize:
    input:
        csv=if_active("fig_b2_trainsize", lambda: [eval_csv(r) for r in artefact_runs("fig_b2_trainsize")]),
        reference=if_active("fig_b2_trainsize", lambda: eval_csv(reference_run("fig_b2_trainsize"))),
        summaries=if_active(
            "fig_b2_trainsize", lambda: [summary(r) for r in trained(artefact_runs("fig_b2_trainsize"))]
        ),
    output:
        report(figure_files("fig_b2_trainsize")[0], caption="../report/fig_b2_trainsize.rst", category="Figures"),
        figure_files("fig_b2_trainsize")[1],
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
    log:
        f"{RESULTS}/logs/figures/fig_b2_trainsize.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure trainsize --csv {input.csv} --summary {input.summaries} --reference {input.reference}"
        " --out {params.prefix} > {log} 2>&1"


rule fig_b3_qualitative:
    input:
        disp=if_active("fig_b3_qualitative", lambda: [disp_dir(r) for r in artefact_runs("fig_b3_qualitative")]),
        dataset=if_active("fig_b3_qualitative", lambda: dataset_json(artefact("fig_b3_qualitative")["dataset"])),
    output:
        report(
            figure_files("fig_b3_qualitative")[0], caption="../report/fig_b3_qualitative.rst", category="Figures"
        ),
        figure_files("fig_b3_qualitative")[1],
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
        pairs=lambda w: config["datasets"][artefact("fig_b3_qualitative")["dataset"]]["eval_list"],
        index=lambda w: artefact("fig_b3_qualitative").get("pair_index", 0),
        disp=lambda w, input: " ".join(
            f"{r.label}={d}" for r, d in zip(artefact_runs("fig_b3_qualitative"), input.disp, strict=True)
        ),
    log:
        f"{RESULTS}/logs/figures/fig_b3_qualitative.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure qualitative --pairs {input.dataset}:{params.pairs} --index {params.index}"
        " --disp {params.disp} --out {params.prefix} > {log} 2>&1"


rule dice_boxplot:
    input:
        csv=if_active("dice_boxplot", lambda: [eval_csv(r) for r in artefact_runs("table1")]),
        dataset=if_active("dice_boxplot", lambda: dataset_json(artefact("table1")["dataset"])),
    output:
        report(figure_files("dice_boxplot")[0], caption="../report/dice_boxplot.rst", category="Figures"),
        figure_files("dice_boxplot")[1],
    params:
        prefix=lambda w, output: os.path.splitext(output[0])[0],
    log:
        f"{RESULTS}/logs/figures/dice_boxplot.log",
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure boxplot --csv {input.csv} --dataset-json {input.dataset} --merge-hemispheres"
        " --out {params.prefix} > {log} 2>&1"
