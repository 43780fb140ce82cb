"""``dirbench train``: train one method with the paper's protocol (see :mod:`dirbench.training`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "train"
HELP = "train a method on a prepared dataset (paper protocol; resumable)"

#: CLI flag → TrainConfig field, for the plain scalar overrides.
_OVERRIDES = {
    "epochs": int, "samples_per_epoch": int, "lr": float, "schedule": str, "lr_min": float,
    "reg_weight": float, "val_every": int, "val_list": str, "val_metric": str, "val_max_pairs": int,
    "train_subset": int, "seed": int, "device": str, "amp": str, "threads": int, "cache_gb": float,
}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="a name from methods.available(), e.g. dp-conv-mf")
    p.add_argument("--dataset", required=True, type=Path, help="the prepared dataset.json")
    p.add_argument("--out", required=True, type=Path, help="run folder (last.pt, best.pt, metrics.csv, ...)")
    p.add_argument("--config", type=Path, help="run YAML (TrainConfig keys); command-line flags win")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if it exists")
    p.add_argument("--model", metavar="JSON", help='model overrides, e.g. \'{"img_size": [64, 64, 64]}\'')
    for name, kind in _OVERRIDES.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from dirbench.errors import UserError
    from dirbench.train_config import TrainConfig
    from dirbench.training import TrainingInterrupted, train

    data = TrainConfig.from_yaml(args.config) if args.config else {}
    data.update(method=args.method, dataset=str(args.dataset))
    if args.model:
        try:
            data["model"] = {**data.get("model", {}), **json.loads(args.model)}
        except json.JSONDecodeError as err:
            raise UserError(f"--model: not valid JSON: {err}") from None
    for name in [*_OVERRIDES, "channels_last", "compile", "tensorboard"]:
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    try:
        summary = train(TrainConfig.from_dict(data), args.out, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        print(f"dirbench train: interrupted ({stop}); rerun with --resume to continue", file=sys.stderr)
        return 143
    print(json.dumps(summary, indent=2))
    return 0
