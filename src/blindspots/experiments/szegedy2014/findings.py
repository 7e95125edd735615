"""Numbers computed from the stages' results and kept in results.json beside them: the §4.2 learning curves' verdicts
and the run's facts (profile, versions, the choices where the paper is silent)."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ... import __version__
from ..curves import compare_curves
from .profiles import Profile


def curve_verdict(plain: Sequence[Mapping[str, Any]], pooled: Sequence[Mapping[str, Any]],
                  key: str = "test_error") -> dict[str, Any]:
    """From per-seed curves of the plain and the pool-trained net (same seeds, same epochs): the final difference
    pool − plain (mean, 95% CI over seeds; NaN bounds for one seed), on how many seeds the pool ends below, and the
    first epoch from which the mean pool curve stays below the mean plain one to the end (None if it never does)."""
    c = compare_curves([r[key] for r in pooled], [r[key] for r in plain], plain[0]["epoch"])
    lo, hi = c.interval or (float("nan"), float("nan"))
    return {"key": key, "seeds": len(plain), "final_plain": float(np.mean(c.control_final)),
            "final_pool": float(np.mean(c.treated_final)), "final_diff": c.mean_difference, "ci_low": lo,
            "ci_high": hi, "seeds_below": c.seeds_below, "below_since_epoch": c.below_from,
            "mean_diff_by_epoch": c.mean_diff_by_epoch}


def facts(p: Profile, seed: int, device: str) -> dict[str, Any]:
    return {
        "profile": p.name, "profile_description": p.description, "seed": seed,
        "images_attacked_per_model": p.n_attack, "attacked_split": "test",
        "training_data": "full 60,000-image training set" if p.train_subset is None else
                         f"a fixed seeded subset of {p.train_subset} training images",
        "versions": {"blindspots": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": device,
        "choices": {
            "attack": "box-constrained L-BFGS, targeted, one random target != label per image (seeded); "
                      "per-sample search over c (bracket, then bisection); the smallest successful "
                      "perturbation is kept (the paper's 'minimum c' read as the largest c that succeeds)",
            "norm_term": "see blindspots.attacks.lbfgs (the attack's params are recorded per stage)",
            "attacked_images": "the first n test images, in a fixed seeded order, that the attacked model "
                               "classifies correctly; clean errors skipped are counted per model",
            "failed_attacks": "an adversarial set holds the clean image where the attack failed",
            "transfer_cell": "error (prediction != true label) of the column model on the row's set",
            "weight_decay": "mean cross-entropy + (λ/2)·Σ‖W‖² over weight matrices",
            "hidden_units": "sigmoid; training recipes per model are recorded in each checkpoint's JSON",
            "magnification": "each perturbation rescaled to per-pixel RMS 0.1 (the paper's stated 'stddev "
                             "0.1'; its printed formula x + 0.1·(x'-x)/‖x'-x‖₂ is not followed), clipped to [0,1]",
            "gaussian_noise": "N(0, σ²) per pixel on the clean images attacked for the table's base model, one "
                              "seeded draw shared by both readings and every column model: 'unclipped' (the "
                              "paper's reading; realised RMS ≈ σ; the inputs leave [0,1]) and 'clipped' to [0,1] "
                              "(realised RMS below σ); the distortion column gives the realised RMS; 'matched "
                              "noise' rows are clipped noise with the same realised RMS as each adversarial row",
            "certified": "Table 1's certified column: per attacked image the largest L2 radius CROWN certifies "
                         "(blindspots.verify; bisection up to the L-BFGS distance), in the table's RMS units "
                         "(L2 / √784), averaged over the images the attack succeeded on; '—' for a model "
                         "CROWN cannot bound",
            "minimal": "'How minimal is minimal?': ReLU nets trained in the section (Adam 1e-3, batches of 64, "
                       "seeded), the exact minimal L∞ (and L1) by a MILP (HiGHS) started from the closest "
                       "attack example; an image past the time limit keeps its proven bounds, no value",
            "splits": "P1/P2 = two halves of a fixed seeded permutation of the 60,000 training images",
        },
    }


__all__ = ["curve_verdict", "facts"]
