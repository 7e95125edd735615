"""Szegedy et al. §4.2 at the paper preset's scale, one seed: the four-arm ablation (weight decay alone; pools at the
input, at the hidden layers, at all layers) of FC100-100-10 on all 60,000 training images for the FC recipe's 40
epochs, seed 0, evaluated on the whole test set, with learning curves.

The same run is now a command: `blindspots reproduce szegedy2014 --profile paper --set parts=s42 --set s42.seeds=1`
(tests/test_szegedy_sections.py checks that it has this script's sizes, so the same stage inputs and keys); this
script stays because the committed results.json and report were made by it, and it re-renders them.

Why a script at the time and not `blindspots reproduce szegedy2014 --profile paper`: the paper profile runs three seeds and
the whole paper; on 2 shared cores its §4.2 alone costs about 4 core-hours (measured here: 26 CPU-s per input-pool
epoch, about 50 per all-layer epoch), more than one session. This runs exactly the paper preset's trainings and
evaluation (the same stage functions and keys, `PoolSizes` "paper" with seeds=1) and renders the same report
section (`pool_report`) from results.json.

How the committed run was made (commit 4faeb7c, 2026-12-02, 2 cores shared with other work): the four trainings
ran as the same stage functions (`adv_training._train_arm`, same stage keys) in two processes at once, one thread
each, their stage folders then gathered into one RUN_DIR; this script then found them cached, ran the evaluation
and the figure, and wrote results.json and the report. The trainings' wall times in the table were measured under
that load (weight decay alone 116 s; the pool arms 31–58 min).

    PYTHONPATH=src python results/szegedy2014-s42-paper-seed0/s42_seed0.py RUN_DIR [--render-only]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from blindspots.stages import StageRunner
from blindspots.experiments.szegedy2014.adv_training import adversarial_training_section
from blindspots.experiments.szegedy2014.profiles import pool_sizes
from blindspots.experiments.szegedy2014.report import pool_report
from blindspots.io import write_json_atomic
from blindspots.report.document import Report, Section, write_report

HERE = Path(__file__).resolve().parent


def build_report(results: dict) -> Report:
    """The report from results.json alone."""
    facts = Section("Run facts", [
        f"command: {results['command']}", f"commit: {results['commit']}",
        f"wall time of this run: {results['wall_time_s']:.0f} s (stages computed earlier are reused; the trainings' "
        "own wall times are in the table above)", f"torch {results['torch']}, one thread per process, 2 shared cores"])
    return Report("Szegedy et al. 2014 §4.2 at the paper preset's scale, seed 0",
                  ["One seed of `blindspots reproduce szegedy2014 --profile paper`'s §4.2 ablation (the paper profile "
                   "runs three); see s42_seed0.py for why."],
                  [pool_report(results["section4_2_adversarial_training"]), facts])


def main() -> None:
    run = Path(sys.argv[1])
    if "--render-only" not in sys.argv:
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        runner = StageRunner(run)
        section, _ = adversarial_training_section(runner, replace(pool_sizes("paper"), seeds=1), seed=0)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__import__("blindspots").__file__).parent).stdout.strip()
        results = {"experiment": "szegedy2014", "section": "4.2", "profile": "paper (seeds=1)",
                   "command": "PYTHONPATH=src python results/szegedy2014-s42-paper-seed0/s42_seed0.py RUN_DIR",
                   "commit": commit, "torch": torch.__version__, "wall_time_s": time.perf_counter() - t0,
                   "stages": [vars(r) for r in runner.log], "section4_2_adversarial_training": section}
        write_json_atomic(run / "results.json", results, sort_keys=False)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    write_report(build_report(results), run)


if __name__ == "__main__":
    main()
