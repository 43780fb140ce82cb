# DIRBench: one DAG from data to the paper's tables and figures (Liu, Ruan & Sheng, MIDL 2025).
#   snakemake --cores all                                        # full reproduction (workflow/config/paper.yaml)
#   snakemake --cores all --configfile workflow/config/demo.yaml # the same DAG on the offline demo data
from snakemake.utils import min_version

min_version("9.17")  # earlier 9.x schedulers oversubscribe cores (snakemake#3913)


# The paper's config is the default; a --configfile given on the command line replaces it (no merging).
if not config:

    configfile: "workflow/config/paper.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    method=r"[a-z0-9\-]+",
    subset=r"all|\d+",


# Light jobs that run on the submitting machine, also with the SLURM executor.
localrules:
    all,
    run_config,
    table,
    learning_curves,
    cost,
    fig_b2_scaling,
    fig_b2_trainsize,
    fig_b3_qualitative,
    dice_boxplot,
    lumir_submission,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/submission.smk"


rule all:
    input:
        all_targets(),
    default_target: True
