"""``dirbench train``: train one method with the paper's protocol (see :mod:`dirbench.training`).

The setting flags are generated from :class:`dirbench.train_config.TrainConfig`, the single source of
their names, types, defaults and help texts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

NAME = "train"
HELP = "train a method on a prepared dataset (paper protocol; resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dirbench.train_config import TrainConfig

    p.add_argument("--method", required=True, help="a registered method, e.g. dp-conv-mf (see the README's list)")
    p.add_argument("--dataset", required=True, type=Path, help="the prepared dataset.json")
    p.add_argument("--out", required=True, type=Path, help="run folder (last.pt, best.pt, metrics.csv, summary.json)")
    p.add_argument("--config", type=Path, help="a YAML file of TrainConfig settings; command-line flags win")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if it exists")
    p.add_argument(
        "--on-change", choices=("refuse", "restart"), default="refuse",
        help="with --resume, when last.pt was trained with settings that change the result: refuse (default, "
        "naming them) or set that run aside in RUN_DIR/stale-<time>/ and start anew",
    )  # fmt: skip
    p.add_argument("--dataset-name", help="the dataset part of the run id (default: the dataset.json's name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines are still printed)")
    settings = p.add_argument_group("training settings (TrainConfig; defaults: the paper's OASIS protocol)")
    TrainConfig.add_arguments(settings, exclude=("method", "dataset"))


def run(args: argparse.Namespace) -> int:
    import yaml

    from dirbench.errors import UserError
    from dirbench.run_record import RunId
    from dirbench.train_config import TrainConfig
    from dirbench.training import TrainingInterrupted, train
    from methods.config import ConfigError

    data = {}
    if args.config:
        try:
            data = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise UserError(f"{args.config}: cannot read the run config: {err}") from None
        if not isinstance(data, dict):
            raise UserError(f"{args.config}: expected a mapping of TrainConfig settings")
    flags = TrainConfig.arguments_given(args)
    if "model" in flags:
        flags["model"] = {**data.get("model", {}), **flags["model"]}
    data.update(flags, method=args.method, dataset=str(args.dataset))
    try:
        cfg = TrainConfig.from_dict(data, where=str(args.config) if args.config else "")
    except ConfigError as err:
        raise UserError(str(err)) from None
    run_id = None
    if args.dataset_name:
        try:
            run_id = RunId(args.dataset_name, cfg.method, cfg.train_subset, cfg.seed)
        except ValueError as err:
            raise UserError(f"--dataset-name / --method: {err}") from None
    try:
        record = train(cfg, args.out, resume=args.resume, progress=not args.no_progress, run=run_id,
                       on_change=args.on_change)  # fmt: skip
    except TrainingInterrupted as stop:
        name = signal.Signals(stop.signum).name
        print(f"dirbench train: interrupted by {name} ({stop}); rerun with --resume to continue", file=sys.stderr)
        return 128 + stop.signum
    print(json.dumps(record.to_dict()["result"] | {"status": record.status, "converged": record.converged}))
    return 0
