"""Options shared by several commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder with your own IDX files (raw or .gz); default: $BLINDSPOTS_DATA or the cache")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="model spec, e.g. 'FC10(1e-4)', FC100-100-10, AE400-10, CNN (see `blindspots models`)")
    p.add_argument("--split", default="train", help="training split: train (all 60k), P1 or P2 (default train)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on a fixed seeded subset of N images (quick runs)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
