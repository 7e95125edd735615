"""What an audit runs on and how hard it looks: models, data, budgets (ε grids) and the attack effort per stage.

The effort fields are sized so that an audit of FC100-100-10 and the CNN on 1,000 MNIST test images fits in
10 minutes on 2 CPU cores (benchmarks/bench_audit.py); every one of them is recorded in results.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models.external import LoadedModel

# MNIST-sized defaults for data in [0, 1]; L∞ budgets scale with the data's range hi − lo, and so do L2 ones.
DEFAULT_EPS_LINF = (0.05, 0.1, 0.15, 0.2, 0.3)
DEFAULT_EPS_L2 = (0.5, 1.0, 1.5, 2.0, 3.0)
CHUNK = 100  # images per work unit: fixed, whatever the number of processes (the determinism rule)
# images per work unit of the query attacks (Square): their cost is a fixed overhead per query more than per image, so
# they run on bigger batches (5× fewer query loops at 500 images); fixed as well, so any number of processes agrees
QUERY_CHUNK = 500

ModelArg = tuple[str, str | None] | LoadedModel


@dataclass(frozen=True)
class Effort:
    """How much each stage spends per image (the speed/strength trade-off, recorded in results.json)."""

    pgd_steps: int = 20  # PGD steps per ε of the sanity runs (independent per ε, restarts, unbounded)
    apgd_steps: int = 25  # APGD steps per ε and loss on the robust-accuracy curves (CE, DLR, targeted DLR)
    apgd_targets: int = 9  # targeted APGD-DLR towards the top classes, on the images still robust (AutoAttack: 9)
    eot_samples: int = 20  # gradients averaged per APGD step when the model's outputs are random (EOT; AutoAttack: 20)
    draws: int = 20  # draws of a random model each example is re-checked over (robust accuracy: their expectation)
    minimal_l2: dict[str, Any] = field(default_factory=lambda: {"steps": 20, "lanes": 2})
    lbfgs_images: int | None = None  # L-BFGS on the first images only (None: all), only for models below `heavy_macs`
    heavy_macs: float = 1e6  # multiply-adds per image (Linear + Conv2d) above which a model counts as large:
    heavy_images: int = 1000  # minimal-l2 then runs on the first `heavy_images` only, and L-BFGS not at all
    bisect_images: int | None = None  # PGD-L∞ bisection for the minimal L∞ on the first images only (None: all)
    bisect_rounds: int = 6
    bisect_steps: int = 10
    sanity_images: int | None = None  # images of the sanity runs (restarts, Square, unbounded budget; None: all)
    restarts: int = 5
    square_queries: int = 1000  # the gradient-free check's query budget per image and ε (Square attack, L∞ and L2)
    square_queries_masked: int = 5000  # ... where the gradient probe finds masking (AutoAttack's Square budget)
    hsj_images: int = 20  # HopSkipJump (decision-based minimal L2 and L∞) as a check on the first images, with
    hsj_queries: int = 2000  # ... this many queries per image and norm;
    hsj_queries_unusable: int = 5000  # on every image, with this many, where the probe finds the gradients unusable
    units_images: int = 1000
    unit_directions: int = 100
    unit_k: int = 8
    certify_method: str = "crown"  # certified robust accuracy per ε (verify): "ibp", "crown" or "alpha-crown"
    certify_max_units: int = 2000  # hidden nonlinear units above which CROWN gives way to IBP (its cost grows with them)
    exact_images: int = 20  # exact minimal L∞ (MILP) on the first images only, each within the two budgets below:
    exact_max_unstable: int = 100  # unstable ReLUs / max units over the best attack's ball (the program's binaries)
    exact_time_limit: float = 20.0  # seconds per image; past it the proven bounds are reported, not a value
    exact_check_images: int = 2  # of those, solved a second time without the certified-radius cut (FLAG if they differ)


FAST = {"lbfgs_images": 100, "bisect_images": 200, "sanity_images": 100}  # --fast: these attacks on the first images


def first(limit: int | None, n: int) -> int:
    """How many of n images an attack limited to its first `limit` (None: all) runs on."""
    return n if limit is None else min(limit, n)


@dataclass
class AuditConfig:
    """One audit: `models` are (target, weights) pairs (a zoo spec such as "CNN", or "pkg.module:factory" with a
    .safetensors file or None) or already loaded models; `mean`/`std` wrap each model in attacks.Normalized so
    that attacks work in the data's own space within `bounds`."""

    models: list[ModelArg]
    data: str = "mnist"
    split: str = "test"
    n: int = 1000
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    eps_linf: tuple[float, ...] | None = None  # None: DEFAULT_EPS_LINF × (hi − lo)
    eps_l2: tuple[float, ...] | None = None  # None: DEFAULT_EPS_L2 × (hi − lo)
    layer: str | None = None  # the §3 units layer; None: the model's last fully connected hidden layer
    zoo: tuple[str, ...] = ()  # extra zoo models, transfer targets only (MNIST-shaped data)
    seed: int = 0
    device: str = "cpu"
    out: Path = Path("runs/audit")
    progress: bool = True
    effort: Effort = field(default_factory=Effort)
    bpda: tuple[str, ...] = ()  # layers attacked through a fitted differentiable stand-in (BPDA; besides those the
    # probe finds, which get the identity where they keep the shape)
    fast: bool = False  # subsample the slow attacks (FAST); the report says which ran on how many images

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.models:
            raise InputError("an audit needs at least one model: pass --model SPEC_OR_TARGET (e.g. --model CNN).")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise InputError(f"--n must be a whole number >= 1 (images to audit), got {self.n!r}.")
        lo, hi = (float(b) for b in self.bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InputError(f"--bounds must be two finite numbers lo < hi, e.g. 0,1; got {self.bounds!r}.")
        self.bounds = (lo, hi)
        if (self.mean is None) != (self.std is None):
            raise InputError("--mean and --std go together (the normalisation the model expects); pass both or "
                             "neither.")
        for name in ("eps_linf", "eps_l2"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(e) for e in value)
                if not value or any(not math.isfinite(e) or e <= 0 for e in value):
                    raise InputError(f"--{name.replace('_', '-')} must be numbers > 0, e.g. 0.1,0.2; got {value!r}.")
                setattr(self, name, tuple(sorted(set(value))))
        if self.fast:
            self.effort = replace(self.effort, **{k: v for k, v in FAST.items() if getattr(self.effort, k) is None})
        self.bpda = tuple(self.bpda)
        if self.seed < 0:
            raise InputError(f"--seed must be >= 0, got {self.seed}.")

    @property
    def span(self) -> float:
        return self.bounds[1] - self.bounds[0]

    @property
    def linf_grid(self) -> tuple[float, ...]:
        return self.eps_linf or tuple(round(e * self.span, 6) for e in DEFAULT_EPS_LINF)

    @property
    def l2_grid(self) -> tuple[float, ...]:
        return self.eps_l2 or tuple(round(e * self.span, 6) for e in DEFAULT_EPS_L2)

    @property
    def eps_ref(self) -> float:
        """The reference L∞ budget of the transfer matrix and the sanity runs: the middle of the L∞ grid."""
        grid = self.linf_grid
        return grid[(len(grid) - 1) // 2]

    def describe(self) -> dict[str, Any]:
        """The run's settings as JSON (models by their targets; the loaded ones are described by the engine)."""
        return {"data": self.data, "split": self.split, "n": self.n, "bounds": list(self.bounds),
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "eps_linf": list(self.linf_grid),
                "eps_l2": list(self.l2_grid), "eps_ref": self.eps_ref, "layer": self.layer, "zoo": list(self.zoo),
                "seed": self.seed, "device": self.device, "chunk": CHUNK, "query_chunk": QUERY_CHUNK,
                "effort": asdict(self.effort),
                "bpda": list(self.bpda), "fast": self.fast}


__all__ = ["AuditConfig", "Effort", "FAST", "first", "DEFAULT_EPS_LINF", "DEFAULT_EPS_L2", "CHUNK", "QUERY_CHUNK"]
