"""`blindspots gc DIR`: remove the stage folders a run's later reruns no longer use."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gc", help="remove superseded stage folders of a run folder",
                       description=("Remove the folders under DIR/stages/ that the latest finished run into DIR (the "
                                    "stage list of DIR/results.json) did not use, e.g. those left by a code change "
                                    "or another profile. Stages of a later, unfinished run and DIR/stages/.broken/ "
                                    "are kept. Takes DIR's lock, so it never runs beside a run into DIR."))
    p.add_argument("dir", metavar="DIR", help="a run folder (reproduce's or audit's --out)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(func=_gc)


def _gc(args: argparse.Namespace) -> int:
    from ..errors import OutputError
    from ..stages import collect_garbage, holding_output, superseded_stages

    if not Path(args.dir).is_dir():
        raise OutputError(f"{args.dir} is not a folder; name a run folder (reproduce's or audit's --out).")
    if args.dry_run:
        with holding_output(args.dir, "DIR") as folder:
            gone = superseded_stages(folder)
    else:
        gone = collect_garbage(args.dir)
    size = sum(f.stat().st_size for g in gone if g.exists() for f in g.rglob("*") if f.is_file())
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(gone)} superseded stage folder(s)" + (f" ({size / 1e6:.1f} MB)" if args.dry_run else ""))
    for g in gone:
        print(f"  {g.name}")
    return 0
