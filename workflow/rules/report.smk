# The paper's artefacts: tables (LaTeX / CSV / Markdown), figures (PDF / PNG) and the cost table.


rule table1:
    input:
        csv=table_inputs("table1") if is_active("table1") else [],
        summaries=summaries(table_inputs("table1")) if is_active("table1") else [],
    output:
        report(table_files("table1")[0], caption="../report/table1.rst", category="Tables"),
        table_files("table1")[1:],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/tables/table1.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench table --kind table1 --csv {input.csv} --summary {input.summaries} --out {params.prefix} > {log} 2>&1"


rule table_b2:
    input:
        csv=table_inputs("table_b2") if is_active("table_b2") else [],
        summaries=summaries(table_inputs("table_b2")) if is_active("table_b2") else [],
    output:
        report(table_files("table_b2")[0], caption="../report/table_b2.rst", category="Tables"),
        table_files("table_b2")[1:],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/tables/table_b2.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench table --kind table_b2 --csv {input.csv} --summary {input.summaries} --out {params.prefix} > {log} 2>&1"


rule table_b3:
    input:
        csv=subset_inputs("table_b3") if is_active("table_b3") else [],
        summaries=summaries(subset_inputs("table_b3")) if is_active("table_b3") else [],
    output:
        report(table_files("table_b3")[0], caption="../report/table_b3.rst", category="Tables"),
        table_files("table_b3")[1:],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/tables/table_b3.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench table --kind table_b3 --csv {input.csv} --summary {input.summaries} --out {params.prefix} > {log} 2>&1"


rule cost:
    input:
        summaries=summaries(table_inputs("table1")) if is_active("cost") else [],
        runtimes=runtimes(table_inputs("table1")) if is_active("cost") else [],
    output:
        report(table_files("cost")[0], caption="../report/cost.rst", category="Tables"),
        table_files("cost")[1:],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/tables/cost.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench cost-table --summary {input.summaries} --runtime {input.runtimes} --out {params.prefix} > {log} 2>&1"


rule fig_b2_scaling:
    input:
        csv=[eval_csv(artefact("fig_b2_scaling")["dataset"], m) for m in artefact("fig_b2_scaling")["methods"]]
        if is_active("fig_b2_scaling")
        else [],
        reference=eval_csv(artefact("fig_b2_scaling")["dataset"], artefact("fig_b2_scaling")["reference"])
        if is_active("fig_b2_scaling")
        else [],
    output:
        report(figure_files("fig_b2_scaling")[0], caption="../report/fig_b2_scaling.rst", category="Figures"),
        figure_files("fig_b2_scaling")[1],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/figures/fig_b2_scaling.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure scaling --csv {input.csv} --reference {input.reference} --out {params.prefix} > {log} 2>&1"


rule fig_b2_trainsize:
    input:
        csv=subset_inputs("fig_b2_trainsize") if is_active("fig_b2_trainsize") else [],
        reference=eval_csv(artefact("fig_b2_trainsize")["dataset"], artefact("fig_b2_trainsize")["reference"])
        if is_active("fig_b2_trainsize")
        else [],
        summaries=summaries(subset_inputs("fig_b2_trainsize")) if is_active("fig_b2_trainsize") else [],
    output:
        report(figure_files("fig_b2_trainsize")[0], caption="../report/fig_b2_trainsize.rst", category="Figures"),
        figure_files("fig_b2_trainsize")[1],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/figures/fig_b2_trainsize.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure trainsize --csv {input.csv} --summary {input.summaries} --reference {input.reference}"
        " --out {params.prefix} > {log} 2>&1"


rule fig_b3_qualitative:
    input:
        runtimes=[f"{disp_dir(artefact('fig_b3_qualitative')['dataset'], m)}/runtime.csv" for m in artefact("fig_b3_qualitative")["methods"]]
        if is_active("fig_b3_qualitative")
        else [],
        dataset=dataset_json(artefact("fig_b3_qualitative")["dataset"]) if is_active("fig_b3_qualitative") else [],
    output:
        report(
            figure_files("fig_b3_qualitative")[0], caption="../report/fig_b3_qualitative.rst", category="Figures"
        ),
        figure_files("fig_b3_qualitative")[1],
    params:
        prefix=output_prefix,
        pairs=lambda w: config["datasets"][artefact("fig_b3_qualitative")["dataset"]]["eval_list"],
        index=artefact("fig_b3_qualitative").get("pair_index", 0),
        disp=" ".join(
            f"{m}={disp_dir(artefact('fig_b3_qualitative')['dataset'], m)}" for m in artefact("fig_b3_qualitative")["methods"]
        ),
    log:
        f"{RESULTS}/logs/figures/fig_b3_qualitative.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure qualitative --pairs {input.dataset}:{params.pairs} --index {params.index}"
        " --disp {params.disp} --out {params.prefix} > {log} 2>&1"


rule dice_boxplot:
    input:
        csv=table_inputs("table1") if is_active("dice_boxplot") else [],
        dataset=dataset_json(artefact("table1")["dataset"]) if is_active("dice_boxplot") else [],
    output:
        report(figure_files("dice_boxplot")[0], caption="../report/dice_boxplot.rst", category="Figures"),
        figure_files("dice_boxplot")[1],
    params:
        prefix=output_prefix,
    log:
        f"{RESULTS}/logs/figures/dice_boxplot.log",
    localrule: True
    conda:
        "../envs/dirbench.yaml"
    shell:
        "dirbench figure boxplot --csv {input.csv} --dataset-json {input.dataset} --merge-hemispheres"
        " --out {params.prefix} > {log} 2>&1"
