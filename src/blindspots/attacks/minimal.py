"""Minimal L2 adversarial examples by boundary projection: sequential projections of the clean image onto
the linearised decision boundary, inside the box, one lane per candidate class.

For an image x with label y (untargeted) the smallest adversarial perturbation solves

    minimise ‖z − x‖₂  subject to  z_y(z) − z_j(z) ≤ 0 for some j ≠ y,  z ∈ [0, 1]^D.

Each lane fixes one rival class j and iterates z ← z + α(Π(x) − z), where Π projects x (not z) onto
{p : m(z) + ∇m(z)·(p − z) ≤ −κ‖∇m(z)‖} ∩ box, with m = z_y − z_j (`projection.project_halfspace_box`,
exact), and α falls geometrically from 1 to `damping` over the steps (full steps on ReLU nets zig-zag
between linear pieces: measured on the CNN, 100 images, median L2 1.525 undamped vs 1.338 damped).
Undamped, this is a sequential-quadratic step on the problem above, with the identity for the Hessian
of its Lagrangian: its fixed points are the problem's KKT points, and on a linear model the first step is the
exact answer. The overshoot κ (a length, in the input's L2 units) is per row and adaptive: halved (by
`adapt`) after a step that lands on the adversarial side, grown after one that does not, so iterates close
in on the boundary from both sides while curved boundaries are still crossed. Lanes go to the `lanes`
rival classes whose linearised distance at x is smallest (the boundary of the closest class at x is not
always the closest one); each image keeps its smallest verified adversarial iterate over all lanes, and
a final bisection along the segment from x to it lands on the boundary. After PRUNE_AT steps, lanes far
behind their image's best stop (half the cost on the FC nets, same results).

A targeted criterion runs two lanes: the rival is, at every step, the highest class other than the target,
or the log-sum-exp of the others (a smooth upper bound). Targeted, box L-BFGS is stronger (measured on
FC100-100-10: 9% of images not reached in 60 steps); pass its x_adv as `init` to refine it.
`init` (e.g. box L-BFGS's x_adv) adds a lane that starts there with the rival of the moment; the result is
never larger than a verified adversarial init.

Adversarial means the criterion's margin is below −tol, tol = base.VERIFY_ULPS float steps of the
logits' scale (`base.tolerance`, as in the L-BFGS and C&W attacks), so a fresh forward pass in another batch
confirms every kept example.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import InputError
from .base import Prepared, Run, attack, check_images, check_int, check_positive, tolerance
from .projection import project_halfspace_box

PRUNE_AT, PRUNE_RATIO = 10, 1.1  # after 10 steps, lanes over 1.1x their image's best so far stop
MAX_OVERSHOOT = 1.0  # κ never exceeds this length (the adaptive growth stops there)
HIGHEST, SMOOTH = -1, -2  # rival codes: the highest other class at each step; log-sum-exp over the others


class Lanes:
    """Rows of the iteration: start point, clean image, own class (label or target), fixed rival (−1: the
    highest other class at each step) and sign (+1 untargeted: m = z_own − z_rival; −1 targeted)."""

    def __init__(self, x: Tensor, own: Tensor, rival: Tensor, sign: Tensor, image: Tensor) -> None:
        self.x, self.own, self.rival, self.sign, self.image = x, own, rival, sign, image

    @staticmethod
    def cat(parts: list[Lanes]) -> Lanes:
        return Lanes(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "own", "rival", "sign", "image")))


def criterion_margin(logits: Tensor, own: Tensor, sign: Tensor) -> Tensor:
    """sign·(z_own − max_{j≠own} z_j): negative exactly when the criterion holds (either kind)."""
    mine = logits.gather(1, own.unsqueeze(1)).squeeze(1)
    other = logits.scatter(1, own.unsqueeze(1), float("-inf")).amax(dim=1)
    return sign * (mine - other)


def lane_margin_grad(model: nn.Module, z: Tensor, shape: torch.Size, lanes: Lanes) -> tuple[Tensor, Tensor, Tensor]:
    """One forward+backward: the lane's constraint margin m [R], its gradient [R, D], and whether z is
    adversarial by the criterion with the verification tolerance [R]."""
    zr = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(zr.view(zr.shape[0], *shape))
        mine = logits.gather(1, lanes.own.unsqueeze(1)).squeeze(1)
        top_other = logits.detach().scatter(1, lanes.own.unsqueeze(1), float("-inf")).argmax(dim=1)
        rival = torch.where(lanes.rival >= 0, lanes.rival, top_other)
        theirs = logits.gather(1, rival.unsqueeze(1)).squeeze(1)
        smooth = lanes.rival == SMOOTH
        if bool(smooth.any()):  # a smooth upper bound on the highest other logit
            lse = logits.scatter(1, lanes.own.unsqueeze(1), float("-inf")).logsumexp(dim=1)
            theirs = torch.where(smooth, lse, theirs)
        m = lanes.sign * (mine - theirs)
        (grad,) = torch.autograd.grad(m.sum(), zr)
    logits = logits.detach()
    adv = criterion_margin(logits, lanes.own, lanes.sign) < -tolerance(logits)
    return m.detach(), grad, adv


def rank_rivals(model: nn.Module, x: Tensor, shape: torch.Size, labels: Tensor, count: int) -> Tensor:
    """The `count` classes ≠ label whose linearised boundary is nearest to x inside the box [B, count]:
    one forward and C − 1 backward passes."""
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr.view(xr.shape[0], *shape))
        n_classes = logits.shape[1]
        if count >= n_classes - 1:
            others = torch.arange(n_classes, device=x.device).expand(x.shape[0], -1)
            return others[others != labels.unsqueeze(1)].view(x.shape[0], n_classes - 1)
        others = logits.detach().scatter(1, labels.unsqueeze(1), float("-inf")).argsort(dim=1, descending=True)
        others = others[:, : n_classes - 1]
        mine = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        dist = []
        for k in range(n_classes - 1):
            m = mine - logits.gather(1, others[:, k:k + 1]).squeeze(1)
            (g,) = torch.autograd.grad(m.sum(), xr, retain_graph=k < n_classes - 2)
            p, feasible = project_halfspace_box(x, g, torch.linalg.vecdot(g, x) - m.detach())
            d = (p - x).double().norm(dim=1)
            dist.append(torch.where(feasible, d, d + 1e6))
    order = torch.stack(dist, dim=1).argsort(dim=1)[:, :count]
    return others.gather(1, order)


def run_lanes(model: nn.Module, lanes: Lanes, start: Tensor, shape: torch.Size, *, steps: int, overshoot: float,
              adapt: float, damping: float, n_images: int) -> tuple[Tensor, Tensor]:
    """Iterate every lane `steps` times; (best adversarial iterate [R, D], its L2 [R], inf where none).

    The step toward the projection is damped from 1 down to `damping` (geometrically over the steps):
    full steps find the boundary fast; short ones stop the zig-zag between the linear pieces of a ReLU
    net. After PRUNE_AT steps a lane whose best is over PRUNE_RATIO times its image's best stops."""
    z = start.clone()
    best = start.clone()
    best_d = torch.full((z.shape[0],), math.inf, dtype=torch.float64, device=z.device)
    kappa = torch.full((z.shape[0],), overshoot, dtype=z.dtype, device=z.device)
    active = torch.arange(z.shape[0], device=z.device)
    for step in range(steps + 1):
        if step == PRUNE_AT and lanes.x.shape[0] > n_images:
            image_best = torch.full((n_images,), math.inf, dtype=torch.float64, device=z.device)
            image_best.scatter_reduce_(0, lanes.image, best_d[active], reduce="amin")
            keep = ~(best_d[active] > PRUNE_RATIO * image_best[lanes.image])
            active, z, kappa = active[keep], z[keep], kappa[keep]
            lanes = Lanes(*(getattr(lanes, f)[keep] for f in ("x", "own", "rival", "sign", "image")))
        m, g, adv = lane_margin_grad(model, z, shape, lanes)
        d = (z - lanes.x).double().norm(dim=1)
        better = adv & (d < best_d[active])
        best[active[better]] = z[better]
        best_d[active[better]] = d[better]
        if step == steps:
            break
        kappa = torch.where(adv, kappa / adapt, kappa * adapt).clamp_(max=MAX_OVERSHOOT)
        c = torch.linalg.vecdot(g, z) - m - kappa * torch.linalg.vector_norm(g, dim=1)
        p, _ = project_halfspace_box(lanes.x, g, c)
        alpha = damping ** (step / max(steps - 1, 1))
        z = p if alpha == 1 else torch.lerp(z, p, alpha)
    return best, best_d


@torch.no_grad()
def bisect_to_boundary(model: nn.Module, x: Tensor, x_adv: Tensor, shape: torch.Size, own: Tensor, sign: Tensor,
                       steps: int) -> Tensor:
    """The point of the segment x → x_adv nearest x that is still adversarial (x_adv must be), to 2^-steps."""
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    r = x_adv - x
    for _ in range(steps):
        mid = (lo + hi) / 2
        logits = model((x + mid.unsqueeze(1) * r).view(x.shape[0], *shape))
        ok = criterion_margin(logits, own, sign) < -tolerance(logits)
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return (x + hi.unsqueeze(1) * r).clamp_(0, 1)


def _check(args: dict[str, Any]) -> None:
    check_int("steps", args["steps"], 0)
    check_int("lanes", args["lanes"], 1)
    check_positive("overshoot", args["overshoot"])
    damping, adapt = args["damping"], args["adapt"]
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 < damping <= 1:
        raise InputError(f"damping must be in (0, 1] (the last step's fraction of the way to the projection), "
                         f"got {damping!r}.")
    check_int("bisect_steps", args["bisect_steps"], 0)
    if isinstance(adapt, bool) or not isinstance(adapt, (int, float)) or not (math.isfinite(adapt) and adapt >= 1):
        raise InputError(f"adapt must be a finite number >= 1 (1 keeps the overshoot fixed), got {adapt!r}.")
    if args["batch_size"] is not None:
        check_int("batch_size", args["batch_size"], 1)


@attack("minimal-l2", check=_check)
def minimal_l2_attack(a: Prepared, *, steps: int = 60, lanes: int = 3, overshoot: float = 0.01, adapt: float = 2.0,
                      damping: float = 0.1, bisect_steps: int = 14, init: Tensor | None = None,
                      batch_size: int | None = None, progress: bool = False) -> Run:
    """Minimal L2 adversarial examples inside the box [0, 1] by boundary projection (see the module doc).

    steps: projections per lane; lanes: rival classes tried per image (untargeted; a targeted criterion
    uses two); overshoot: initial κ (input L2 units); adapt: κ's factor per step; damping: the last step's
    fraction of the way to the projection (1: undamped, fastest on smooth nets); bisect_steps: final
    bisection steps towards x; init: optional adversarial starting points [N, ...] (e.g. an L-BFGS result)
    that the result never exceeds where they are verified adversarial; batch_size: images per chunk
    (default 128 on CPU, 4096 on GPU). Deterministic (no randomness).

    Returns a minimal AttackResult (x_adv [N, ...]); extras "lane" (0.. for the rival lanes, the last one for
    the init lane, −1 where nothing adversarial was found) and "clean_adversarial".
    """
    model, x, criterion = a.model, a.x, a.criterion
    n, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(n, -1)
    start = None
    if init is not None:
        start = check_images(init, "init")
        if start.shape != x.shape:
            raise InputError(f"init has shape {tuple(start.shape)} but images have {tuple(x.shape)}; pass one "
                             f"starting point per image (e.g. lbfgs_attack(...).x_adv).")
        start = start.detach().to(device=x.device, dtype=x.dtype).reshape(n, -1)
    targeted = criterion.targets is not None
    own_all = criterion.targets if targeted else criterion.labels
    assert own_all is not None
    clean = criterion.is_adversarial(a.clean_logits)
    x_adv = flat.clone()
    lane_of = torch.full((n,), -1, dtype=torch.long, device=x.device)
    todo = (~clean).nonzero().squeeze(1)
    if batch_size is None:
        batch_size = 4096 if x.device.type == "cuda" else 128
    bar = tqdm(total=int(todo.numel()), desc="minimal L2", unit="img", disable=not progress, leave=False)
    for i in range(0, todo.numel(), batch_size):
        rows = todo[i:i + batch_size]
        adv, lane = _attack_chunk(model, flat[rows], shape, own_all[rows], targeted, lanes=lanes, steps=steps,
                                  overshoot=overshoot, adapt=float(adapt), damping=damping,
                                  bisect_steps=bisect_steps, init=None if start is None else start[rows])
        x_adv[rows] = adv
        lane_of[rows] = lane
        bar.update(int(rows.numel()))
    bar.close()
    return Run(x_adv.view_as(x), extras={"lane": lane_of, "clean_adversarial": clean})


def _attack_chunk(model: nn.Module, x: Tensor, shape: torch.Size, own: Tensor, targeted: bool, *, lanes: int,
                  steps: int, overshoot: float, adapt: float, damping: float, bisect_steps: int,
                  init: Tensor | None) -> tuple[Tensor, Tensor]:
    """Every lane of a chunk of images at once; (x_adv [B, D], winning lane [B], −1 where none)."""
    b = x.shape[0]
    image = torch.arange(b, device=x.device)
    sign = torch.full((b,), -1.0 if targeted else 1.0, dtype=x.dtype, device=x.device)
    if targeted:
        rivals = torch.tensor([[HIGHEST, SMOOTH]], device=x.device).expand(b, 2)
    else:
        rivals = rank_rivals(model, x, shape, own, lanes)
    parts = [Lanes(x, own, rivals[:, k], sign, image) for k in range(rivals.shape[1])]
    starts = [x] * len(parts)
    if init is not None:
        parts.append(Lanes(x, own, torch.full_like(own, -1), sign, image))
        starts.append(init)
    rows = Lanes.cat(parts)
    best, best_d = run_lanes(model, rows, torch.cat(starts), shape, steps=steps, overshoot=overshoot, adapt=adapt,
                             damping=damping, n_images=b)
    if init is not None:  # a verified adversarial init counts even if its lane never improved on it
        with torch.no_grad():
            logits = model(init.view(b, *shape))
        ok = criterion_margin(logits, own, sign) < -tolerance(logits)
        d0 = (init - x).double().norm(dim=1)
        tail = slice(best_d.shape[0] - b, None)
        keep = ok & (d0 < best_d[tail])
        best[tail][keep], best_d[tail][keep] = init[keep], d0[keep]
    per_lane = best_d.view(len(parts), b)
    lane = per_lane.argmin(dim=0)
    found = torch.isfinite(per_lane.min(dim=0).values)
    x_adv = best.view(len(parts), b, -1)[lane, image]
    x_adv = torch.where(found.unsqueeze(1), bisect_to_boundary(model, x, x_adv, shape, own, sign, bisect_steps), x)
    # where nothing was found, x_adv = x (a failure, reported as such by the fresh pass)
    lane = torch.where(found, lane, torch.full_like(lane, -1))
    return x_adv, lane
