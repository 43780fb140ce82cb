"""Config mistakes fail when the DAG is built, in one line naming the key's place (dirbench.workflow_config)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dirbench.workflow_config import check_config, run_settings, runs
from test_workflow import REPO, snakemake

from methods.config import ConfigError

DEMO = yaml.safe_load((REPO / "workflow/config/demo.yaml").read_text())

Mutation = Callable[[dict[str, Any]], None]
CASES: list[tuple[str, Mutation, str]] = [
    ("epoch", lambda c: c["train"]["defaults"].update(epoch=5),
     "train.defaults.epoch: unknown key; did you mean 'epochs'?"),
    ("lr", lambda c: c["train"]["defaults"].update(lr="fast"), "train.defaults.lr: expected float, got 'fast'"),
    ("method", lambda c: c["artefacts"]["table1"]["methods"].append("voxelmorf"),
     "artefacts.table1.methods[11]: unknown method 'voxelmorf'; did you mean 'voxelmorph'?"),
    ("model", lambda c: c["train"]["methods"]["transmorph"]["model"].update(windw_size=[2, 2, 2]),
     "train.methods.transmorph.model: windw_size: unknown key; did you mean 'window_size'?"),
    ("greedy", lambda c: c["greedy"].update(iteratons="10x5"),
     "greedy.iteratons: unknown key; did you mean 'iterations'?"),
    ("greedy-value", lambda c: c["greedy"].update(metric="CC"),
     "greedy.metric: expected one of 'MAHAL', 'MI', 'NCC', 'NMI', 'SSD', 'WNCC', got 'CC'"),
    ("prepare", lambda c: c["datasets"]["demo"]["prepare"].update(subject=3),
     "datasets.demo.prepare.subject: not an option of `dirbench data demo`; did you mean 'subjects'?"),
    ("prepare-value", lambda c: c["datasets"]["demo"]["prepare"].update(spacing="fine"),
     "datasets.demo.prepare.spacing: expected float, got 'fine'"),
    ("source", lambda c: c["datasets"]["demo"].update(source="oasys"),
     "datasets.demo.source: unknown source 'oasys'; known: demo, lumir, oasis"),
    ("artefact", lambda c: c["artefacts"].update(tabel1={"activate": True}),
     "artefacts.tabel1: unknown artefact; did you mean 'table1'?"),
    ("merged", lambda c: c["train"]["methods"].update({"dp-conv-c": {"lr": -1}}),
     "train settings of demo/dp-conv-c/all (for artefacts.table1): lr must be > 0"),
]  # fmt: skip


@pytest.mark.parametrize(("mutation", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_named_with_its_place(mutation: Mutation, message: str) -> None:
    config = copy.deepcopy(DEMO)
    mutation(config)
    with pytest.raises(ConfigError) as err:
        check_config(config)
    assert str(err.value) == message


@pytest.mark.parametrize("name", ["paper", "demo", "ci"])
def test_the_shipped_configs_pass(name: str) -> None:
    check_config(yaml.safe_load((REPO / f"workflow/config/{name}.yaml").read_text()))


def test_settings_merge_defaults_then_dataset_then_method() -> None:
    config = yaml.safe_load((REPO / "workflow/config/paper.yaml").read_text())
    config["train"]["methods"] = {"vfa": {"lr": 5e-4}}
    needed = {run.path for _, run in runs(config)}
    assert {"oasis/dp-conv-mf/9", "lumir/dp-convic-c/10", "oasis/voxelmorph-l/all"} <= needed
    lumir_vfa = next(run for _, run in runs(config) if run.path == "lumir/vfa/all")
    settings = run_settings(config, lumir_vfa, "d.json")
    assert settings["epochs"] == 1500 and settings["schedule"] == "cosine"  # the dataset layer
    assert settings["lr"] == 5e-4  # the method layer wins
    assert settings["train_subset"] is None and settings["dataset"] == "d.json"


def test_snakemake_dry_run_stops_with_one_line(tmp_path: Path) -> None:
    config = copy.deepcopy(DEMO)
    config["train"]["defaults"]["epoch"] = 5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(path), cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr  # Snakemake prints the WorkflowError on stdout
    assert "config: train.defaults.epoch: unknown key; did you mean 'epochs'?" in output
    assert len(output.strip().splitlines()) <= 4, output
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
