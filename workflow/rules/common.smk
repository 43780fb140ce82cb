# Shared helpers of every .smk file (config checks, paths of a run, the inputs of each artefact).
# A run is a dirbench.run_record.RunId (dataset, method, training-set subset, seed); its files live under
# runs/, disp/ and eval/ at RunId.path ("dataset/method/subset").
import json
import shlex

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from dirbench.run_record import RunId
from dirbench.workflow_config import ARTEFACT_TABLES, NO_TRAINING, check_config, run_settings
from methods.config import ConfigError


validate(config, schema="../schemas/config.schema.yaml")
try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(f"config: {err}") from None

RESULTS = f"results/{config['name']}"


# ---------------------------------------------------------------- datasets and runs


def dataset_json(name):
    """The prepared dataset.json of dataset ``name``."""
    return f"{config['datasets'][name]['path']}/dataset.json"


def eval_list(wildcards):
    return config["datasets"][wildcards.dataset]["eval_list"]


def run_of(wildcards):
    """The RunId of a job's {dataset}/{method}/{subset} wildcards."""
    run = RunId.from_tokens(wildcards.dataset, wildcards.method, wildcards.subset)
    seed = run_settings(config, run, "").get("seed", 42)
    return RunId(run.dataset, run.method, run.subset, seed)


def run_dir(run):
    return f"{RESULTS}/runs/{run.path}"


def disp_dir(run):
    return f"{RESULTS}/disp/{run.path}"


def eval_csv(run):
    return f"{RESULTS}/eval/{run.path}.csv"


def summary(run):
    return f"{run_dir(run)}/summary.json"


def train_settings(wildcards):
    """The merged TrainConfig settings of one run (checked when the DAG was built)."""
    return run_settings(config, run_of(wildcards), dataset_json(wildcards.dataset))


def train_runtime(wildcards, attempt):
    """Minutes of wall time for a training job; grows with each retry."""
    return int(config["train"].get("runtime_minutes", 60 * 24)) * attempt


def evaluation_disp(wildcards):
    """The displacement folder an evaluation reads (none for the zero field, ``initial``)."""
    return [] if wildcards.method == "initial" else disp_dir(run_of(wildcards))


def label_option(labels):
    """``--labels X`` for ``dirbench evaluate``; none for ``dataset`` (the dataset's own label list)."""
    return "" if labels == "dataset" else f"--labels {labels}"


def prepare_args(ds):
    """Command-line words of ``dirbench data <source> ...`` for a configured dataset."""
    args = [ds["source"], "--out", ds["path"]]
    for key, value in ds.get("prepare", {}).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(args)


# ---------------------------------------------------------------- artefacts


def artefact(name):
    """The config of one artefact (table / figure / submission)."""
    return config["artefacts"][name]


def is_active(name):
    return config["artefacts"].get(name, {}).get("activate", False)


def if_active(name, value):
    """``value()`` when artefact ``name`` is active, else no input: the one guard every artefact rule uses."""
    return value() if is_active(name) else []


def artefact_runs(name):
    """The runs behind an artefact's rows, in row order: Initial and Greedy first when enabled, then the
    methods, or one method on each training-set size."""
    spec = artefact(name)
    dataset = spec["dataset"]
    labels = [m for m in NO_TRAINING if spec.get(m, False)] + list(spec.get("methods", []))
    if spec.get("method"):
        labels += [spec["method"] if s == "all" else f"{spec['method']}@{s}" for s in spec["sizes"]]
    return [RunId.from_label(label, dataset) for label in labels]


def reference_run(name):
    spec = artefact(name)
    return RunId.from_label(spec["reference"], spec["dataset"])


def trained(runs):
    return [run for run in runs if run.method not in NO_TRAINING]


def table_inputs(wildcards):
    """Input function of the tables (evaluation CSVs and training summaries of the rows)."""
    runs = artefact_runs(wildcards.table)
    return {"csv": [eval_csv(r) for r in runs], "summaries": [summary(r) for r in trained(runs)]}


def table_files(name):
    return multiext(f"{RESULTS}/tables/{name}", ".tex", ".table.tex", ".csv", ".md")


def figure_files(name):
    return multiext(f"{RESULTS}/figures/{name}", ".pdf", ".png")


def all_targets():
    """Everything the `all` target builds for the active config."""
    targets = []
    for table in ARTEFACT_TABLES:
        if is_active(table):
            targets += table_files(table) + figure_files(f"curves_{table}")
    for figure in ("fig_b2_scaling", "fig_b2_trainsize", "fig_b3_qualitative", "dice_boxplot"):
        if is_active(figure):
            targets += figure_files(figure)
    if is_active("cost"):
        targets += table_files("cost")
    if is_active("lumir_submission"):
        targets.append(f"{RESULTS}/submission/lumir_submission.zip")
    return targets
