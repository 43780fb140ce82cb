# Shared helpers of the rule files (config validation, paths, the target lists of each artefact).
import json

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = f"results/{config['name']}"
SUBSET_ALL = "all"


# ---------------------------------------------------------------- datasets


def dataset_json(name):
    """The prepared dataset.json of dataset ``name``."""
    return f"{config['datasets'][name]['path']}/dataset.json"


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def eval_list(wildcards):
    return config["datasets"][wildcards.dataset]["eval_list"]


# ---------------------------------------------------------------- runs


def run_dir(dataset, method, subset=SUBSET_ALL):
    return f"{RESULTS}/runs/{dataset}/{method}/{subset}"


def disp_dir(dataset, method, subset=SUBSET_ALL):
    return f"{RESULTS}/disp/{dataset}/{method}/{subset}"


def eval_csv(dataset, method, subset=SUBSET_ALL):
    return f"{RESULTS}/eval/{dataset}/{method}/{subset}.csv"


def run_settings(wildcards):
    """The TrainConfig of one run: defaults < dataset settings < method settings < subset."""
    settings = dict(config["train"]["defaults"])
    settings.update(config["train"].get("datasets", {}).get(wildcards.dataset, {}))
    settings.update(config["train"].get("methods", {}).get(wildcards.method, {}))
    settings["method"] = wildcards.method
    settings["dataset"] = dataset_json(wildcards.dataset)
    settings["train_subset"] = None if wildcards.subset == SUBSET_ALL else int(wildcards.subset)
    return settings


def train_runtime(wildcards, attempt):
    """Minutes of wall time for a training job; grows with each retry."""
    return int(config["train"].get("runtime_minutes", 60 * 24)) * attempt


def method_label(wildcards):
    """The method column of the evaluation CSV: ``method`` or ``method@subset``."""
    return wildcards.method if wildcards.subset == SUBSET_ALL else f"{wildcards.method}@{wildcards.subset}"


def evaluation_disp(wildcards):
    """Inputs of an evaluation: the registration's runtime.csv (none for the zero field)."""
    if wildcards.method == "initial":
        return []
    return f"{disp_dir(wildcards.dataset, wildcards.method, wildcards.subset)}/runtime.csv"


# ---------------------------------------------------------------- artefacts


def artefact(section):
    """The config of one artefact (table / figure / submission)."""
    return config["artefacts"][section]


def is_active(section):
    return config["artefacts"].get(section, {}).get("activate", False)


def table_inputs(section):
    """Evaluation CSVs of a method table, in row order (Initial and Greedy first when enabled)."""
    spec = config["artefacts"][section]
    rows = []
    if spec.get("initial", False):
        rows.append("initial")
    if spec.get("greedy", False):
        rows.append("greedy")
    rows += spec["methods"]
    return [eval_csv(spec["dataset"], m) for m in rows]


def subset_inputs(section):
    """Evaluation CSVs of a training-set-size study (one method, several subsets)."""
    spec = config["artefacts"][section]
    sizes = [str(s) for s in spec["sizes"]]
    return [eval_csv(spec["dataset"], spec["method"], s) for s in sizes]


def summaries(csvs):
    """The training summary.json behind each evaluation CSV (none for initial / greedy)."""
    out = []
    for path in csvs:
        parts = path[len(f"{RESULTS}/eval/") : -len(".csv")].split("/")
        dataset, method, subset = parts
        if method not in ("initial", "greedy"):
            out.append(f"{run_dir(dataset, method, subset)}/summary.json")
    return out


def runtimes(csvs):
    """The registration runtime.csv behind each evaluation CSV (none for initial)."""
    out = []
    for path in csvs:
        dataset, method, subset = path[len(f"{RESULTS}/eval/") : -len(".csv")].split("/")
        if method != "initial":
            out.append(f"{disp_dir(dataset, method, subset)}/runtime.csv")
    return out


def output_prefix(wildcards, output):
    """The common prefix of a rule's outputs (``x.tex`` / ``x.csv`` → ``x``)."""
    return os.path.splitext(output[0])[0]


def table_files(name):
    return multiext(f"{RESULTS}/tables/{name}", ".tex", ".table.tex", ".csv", ".md")


def figure_files(name):
    return multiext(f"{RESULTS}/figures/{name}", ".pdf", ".png")


def all_targets():
    """Everything the `all` target builds for the active config."""
    targets = []
    for table in ("table1", "table_b2", "table_b3"):
        if is_active(table):
            targets += table_files(table)
    for figure in ("fig_b2_scaling", "fig_b2_trainsize", "fig_b3_qualitative", "dice_boxplot"):
        if is_active(figure):
            targets += figure_files(figure)
    if is_active("cost"):
        targets += table_files("cost")
    if is_active("lumir_submission"):
        targets.append(f"{RESULTS}/submission/lumir_submission.zip")
    return targets


def prepare_args(ds):
    """Command-line words of ``dirbench data <source> ...`` for a configured dataset."""
    args = [ds["source"], "--out", ds["path"]]
    for key, value in ds.get("prepare", {}).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(args)


def label_option(labels):
    """``--labels X`` for ``dirbench evaluate``; none for ``dataset`` (the dataset's own label list)."""
    return "" if labels == "dataset" else f"--labels {labels}"


def write_yaml(path, data):
    """Write ``data`` as YAML (a run configuration)."""
    import yaml

    with open(path, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
