"""`blindspots models | train | eval`."""

from __future__ import annotations

import argparse

from ..models import VALID_FORMS, default_recipe, evaluate, load_model, parse_spec, train
from .common import add_data_dir, add_device, add_model_args, print_json

ZOO = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "FC123-456-10", "AE400-10",
       "CNN", "MAXOUT", "RBF")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo and the spec forms")
    p.set_defaults(func=_list)

    t = sub.add_parser("train", help="train a model (or reuse its checkpoint) and store it")
    add_model_args(t)
    add_device(t)
    add_data_dir(t)
    t.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    t.add_argument("--json", action="store_true", help="print the checkpoint metadata as JSON")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="train and test error of a stored model, recomputed from the data")
    add_model_args(e)
    add_device(e)
    add_data_dir(e)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_eval)


def _list(args: argparse.Namespace) -> int:
    print("Spec forms:")
    for form in VALID_FORMS:
        print(f"  {form}")
    print("\nThe papers' zoo (default recipe):")
    for name in ZOO:
        r = default_recipe(name)
        print(f"  {name:<14} {r.optimizer:<5} epochs={r.epochs:<3} λ={r.weight_decay:g}  {r.note}")
    return 0


def _train(args: argparse.Namespace) -> int:
    tm = train(args.spec, split=args.split, seed=args.seed, epochs=args.epochs, train_subset=args.train_subset,
               dataset=args.dataset, device=args.device, force=args.force, data_dir=args.data_dir)
    if args.json:
        print_json(tm.meta)
    else:
        m = tm.meta
        print(f"{m['spec']} on {m['split']} (seed {m['seed']}): train error {100 * m['train_error']:.2f}%, "
              f"test error {100 * m['test_error']:.2f}%, {m['wall_time_s']} s -> {tm.path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    tm = load_model(parse_spec(args.spec), split=args.split, seed=args.seed, epochs=args.epochs,
                    train_subset=args.train_subset, dataset=args.dataset, device=args.device)
    errs = evaluate(tm.model, dataset=args.dataset, train_split=args.split, train_subset=args.train_subset,
                    data_dir=args.data_dir)
    if args.json:
        print_json({"spec": tm.meta["spec"], "split": args.split, "seed": args.seed, **errs,
                    "checkpoint": str(tm.path)})
    else:
        print(f"{tm.meta['spec']}: train error {100 * errs['train_error']:.2f}%, "
              f"test error {100 * errs['test_error']:.2f}%  ({tm.path})")
    return 0
