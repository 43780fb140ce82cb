"""The workflow config, checked when the DAG is built, before any job runs (``workflow/rules/common.smk``).

The JSON schema (``workflow/schemas/config.schema.yaml``) checks the config's shape and fills in defaults;
this module checks everything the schema cannot know, through the classes that own each setting, so that
a typo fails ``snakemake -n`` within seconds instead of hours later inside a job:

- the merged training settings of every run (``train.defaults`` → ``train.datasets.<d>`` →
  ``train.methods.<m>``) through :class:`~dirbench.train_config.TrainConfig`, each layer's keys and types
  checked in its own place so the message names where the typo is;
- method names in the artefacts against the registry, and ``model:`` overrides against the builder's own
  configuration (only models with overrides are built, once, at their default size);
- ``greedy:`` through :class:`methods.greedy.GreedyConfig`;
- each dataset's ``prepare:`` options against the flags of ``dirbench data <source>`` (for the demo,
  generated from :class:`~dirbench.data.demo.DemoParams`).

Every problem is a :class:`methods.config.ConfigError` whose message names the key's place in the config
and what was expected.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
from collections.abc import Iterator
from typing import Any

import torch

import methods
from dirbench.run_record import RunId
from dirbench.train_config import TrainConfig
from methods.config import ConfigError
from methods.greedy import GreedyConfig

__all__ = ["ARTEFACT_TABLES", "NO_TRAINING", "check_config", "run_settings", "runs"]

#: Method labels that are rows of a table without a training run.
NO_TRAINING = ("initial", "greedy")
#: The table artefacts (one wildcard rule builds them).
ARTEFACT_TABLES = ("table1", "table_b2", "table_b3")

_SUBSET_ALL = "all"


def run_settings(config: dict[str, Any], run: RunId, dataset_json: str) -> dict[str, Any]:
    """The merged training settings of ``run``: defaults < dataset < method < the run's own (subset, paths)."""
    train = config["train"]
    settings = dict(train["defaults"])
    settings.update(train.get("datasets", {}).get(run.dataset, {}))
    settings.update(train.get("methods", {}).get(run.method, {}))
    settings.update(method=run.method, dataset=dataset_json, train_subset=run.subset)
    return settings


def _sizes(spec: dict[str, Any]) -> list[int | None]:
    return [None if s == _SUBSET_ALL else int(s) for s in spec.get("sizes", [])]


def runs(config: dict[str, Any]) -> Iterator[tuple[str, RunId]]:
    """Every training run the active artefacts need, as ``(place in the config, run id)``."""
    arts = config["artefacts"]
    for name, spec in arts.items():
        if not spec.get("activate"):
            continue
        place = f"artefacts.{name}"
        dataset = spec.get("dataset") or arts.get("table1", {}).get("dataset", "")
        labels = list(spec.get("methods", []))
        labels += [spec[k] for k in ("reference",) if spec.get(k)]
        if spec.get("method"):
            sizes = _sizes(spec) or [None]
            labels += [RunId(dataset, spec["method"], size).label for size in sizes]
        for label in labels:
            base = RunId.from_label(label, dataset)
            if base.method not in NO_TRAINING:
                yield place, base


def _check_method(name: str, where: str) -> None:
    if name in NO_TRAINING:
        return
    known = methods.available()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"registered: {', '.join(known)}"
        raise ConfigError(f"{where}: unknown method {name!r}; {hint}")


def _check_model(method: str, overrides: dict[str, Any], where: str) -> None:
    """Build the model with ``overrides`` (about a second on a CPU): unknown or invalid arguments fail here."""
    if not overrides:
        return
    try:
        with torch.no_grad():
            methods.build(method, **overrides)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _check_prepare(source: str, prepare: dict[str, Any], where: str) -> None:
    """``prepare`` keys and values against the flags of ``dirbench data <source>``."""
    command = importlib.import_module(f"dirbench.commands.data_{source}")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "out")}
    for key, value in prepare.items():
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(actions)}"
            raise ConfigError(f"{where}.{key}: not an option of `dirbench data {source}`; {hint}")
        action = actions[key]
        if action.type is not None and not isinstance(value, bool):
            try:
                action.type(str(value))
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                kind = getattr(action.type, "__name__", "a valid value")
                raise ConfigError(f"{where}.{key}: expected {kind}, got {value!r}") from None
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f"{where}.{key}: expected one of {list(action.choices)}, got {value!r}")


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first problem found (see the module docstring)."""
    for name, ds in config["datasets"].items():
        _check_prepare(ds["source"], ds.get("prepare", {}), f"datasets.{name}.prepare")
    train = config["train"]
    TrainConfig.check_partial(train["defaults"], "train.defaults")
    for section in ("datasets", "methods"):
        for key, layer in train.get(section, {}).items():
            TrainConfig.check_partial(layer, f"train.{section}.{key}")
            if section == "datasets" and key not in config["datasets"]:
                raise ConfigError(f"train.datasets.{key}: no dataset {key!r} under datasets")
            if section == "methods":
                _check_method(key, f"train.methods.{key}")
                _check_model(key, layer.get("model", {}), f"train.methods.{key}.model")
    GreedyConfig.from_dict(config.get("greedy", {}), where="greedy")
    for name, spec in config["artefacts"].items():
        if not spec.get("activate"):
            continue
        place = f"artefacts.{name}"
        if "dataset" in spec and spec["dataset"] and spec["dataset"] not in config["datasets"]:
            raise ConfigError(f"{place}.dataset: no dataset {spec['dataset']!r} under datasets")
        for i, label in enumerate(spec.get("methods", [])):
            _check_method(RunId.from_label(label).method, f"{place}.methods[{i}]")
        for key in ("method", "reference"):
            if spec.get(key):
                _check_method(spec[key], f"{place}.{key}")
    checked: set[RunId] = set()
    for place, run in runs(config):
        if run in checked:
            continue
        checked.add(run)
        where = f"train settings of {run.path} (for {place})"
        TrainConfig.from_dict(run_settings(config, run, "dataset.json"), where=where)
