"""The attack stages of an audit, per model: clean accuracy, minimal L2 and L∞ perturbations, robust accuracy
against ε. Every per-image loop runs over fixed chunks (runner.map) with randomness seeded per chunk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..attacks.base import attack_mode
from ..attacks.pgd import pgd, pgd_linf_per_image
from ..models.external import check_outputs
from .common import Ctx, as_list, attack, quantiles, robust_curve, supports_bounds
from .runner import chunk_seed, save_tensors

L2_ATTACKS = ("deepfool", "minimal-l2", "lbfgs")
LINF_ATTACKS = ("fgsm-min", "pgd-bisection")


def clean_stage(ctx: Ctx) -> dict[str, Any]:
    """Accuracy, the kind of output (logits or log-probabilities; probabilities are refused) and per-image margins
    z_y − max_{j≠y} z_j (negative: misclassified)."""

    def compute(folder: Path | None) -> dict[str, Any]:
        kind = check_outputs(ctx.model.module, ctx.x, ctx.data_id["n_classes"], labels=ctx.y)

        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            with torch.no_grad(), attack_mode(ctx.model.module) as m:
                return {"logits": m(ctx.x[rows]).double().cpu()}

        z = ctx.runner.map(fn, ctx.n, f"clean {ctx.model.name}")["logits"]
        y = ctx.y.cpu()
        own = z.gather(1, y.unsqueeze(1)).squeeze(1)
        rival = z.scatter(1, y.unsqueeze(1), -math.inf).amax(1)
        correct = z.argmax(1) == y
        return {"accuracy": float(correct.double().mean()), "n": ctx.n, "errors": int((~correct).sum()),
                "output": kind, "correct": as_list(correct), "margin": as_list(own - rival)}

    return ctx.runner.run(f"clean-{ctx.model.name}", ctx.inputs(), compute)[0]


def _minimal_fields(r: Any, grid: tuple[float, ...], norm: str, clean_err: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: the size of the found perturbation (0 for a clean error, inf where the attack failed) and whether
    the example, clipped to each budget of the grid, is still adversarial."""
    size = torch.where(r.success, r.measure(norm).double(), torch.full_like(r.l2, math.inf, dtype=torch.float64))
    size = torch.where(clean_err.to(size.device), torch.zeros_like(size), size)
    _, ok = r.at(grid, norm)
    return {"size": size.cpu(), "at": (ok.T | clean_err.to(ok.device).unsqueeze(1)).double().cpu()}


def _pad(rows: int, take: torch.Tensor, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fields computed for the rows `take` of a chunk, NaN elsewhere (attacks run on the first images only)."""
    out = {}
    for k, v in fields.items():
        full = torch.full((rows, *v.shape[1:]), math.nan, dtype=torch.float64)
        full[take] = v.double()
        out[k] = full
    return out


def _summary(fields: dict[str, torch.Tensor], grid: tuple[float, ...], names: list[str],
             correct: torch.Tensor) -> dict[str, Any]:
    """Distributions (over the correctly classified images each attack ran on), clipped curves, the per-image best."""
    per: dict[str, Any] = {}
    sizes = []
    for name in names:
        size, at = fields[f"{name}.size"], fields[f"{name}.at"]
        ran = ~torch.isnan(size)
        attacked = ran & correct
        per[name] = {"images": int(attacked.sum()), "ran_on": int(ran.sum()),
                     "success_rate": float(torch.isfinite(size[attacked]).double().mean())
                     if bool(attacked.any()) else math.nan,
                     "stats": quantiles(size[ran & correct].numpy()), "sizes": as_list(size),
                     "at": [[None if math.isnan(v) else int(v) for v in row] for row in at.tolist()],
                     "curve": robust_curve(at[ran].bool()) if bool(ran.any()) else [math.nan] * len(grid)}
        sizes.append(torch.where(ran, size, torch.full_like(size, math.inf)))
    best = torch.stack(sizes).amin(0) if sizes else torch.full_like(correct, math.inf, dtype=torch.float64)
    return {"attacks": per, "best": {"stats": quantiles(best[correct].numpy()), "sizes": as_list(best)}}


def minimal_l2_stage(ctx: Ctx, clean: dict[str, Any]) -> dict[str, Any]:
    """Per-image minimal L2 from DeepFool, minimal-l2 (box [0, 1] only) and L-BFGS (small models, first images)."""
    e, cfg = ctx.config.effort, ctx.config
    names = [a for a in L2_ATTACKS if supports_bounds(a, cfg.bounds)]
    skipped = {a: f"works in the box [0, 1] only; the data's bounds are {list(cfg.bounds)}"
               for a in L2_ATTACKS if a not in names}
    heavy = ctx.model.macs > e.heavy_macs
    if "lbfgs" in names and heavy:
        names.remove("lbfgs")
        skipped["lbfgs"] = (f"skipped for speed: {ctx.model.macs:,} multiply-adds per image > "
                            f"{e.heavy_macs:,.0f}")
    first = {"lbfgs": e.lbfgs_images, "minimal-l2": e.heavy_images if heavy else ctx.n}
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    params = {"deepfool": {"candidates": 4} if heavy else {}, "minimal-l2": dict(e.minimal_l2), "lbfgs": {}}

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), ~correct[rows]
            index = torch.arange(rows.start, rows.stop)
            out: dict[str, torch.Tensor] = {}
            for name in names:
                take = index < first.get(name, ctx.n)
                if not bool(take.any()):
                    fields = {"size": torch.empty(0), "at": torch.empty(0, len(cfg.l2_grid))}
                else:
                    sub = take.to(x.device)
                    r = attack(name, ctx, x[sub], crit.subset(sub), **params[name])
                    fields = _minimal_fields(r, cfg.l2_grid, "l2", err[take])
                out.update({f"{name}.{k}": v for k, v in _pad(len(index), take, fields).items()})
            return out

        fields = ctx.runner.map(fn, ctx.n, f"minimal L2 {ctx.model.name}")
        return {**_summary(fields, cfg.l2_grid, names, correct), "eps": list(cfg.l2_grid), "skipped": skipped,
                "params": {k: params[k] for k in names}}

    return ctx.runner.run(f"minimal-l2-{ctx.model.name}", ctx.inputs(), compute)[0]


def _bisect(ctx: Ctx, x: torch.Tensor, crit: Any, start: torch.Tensor, found: torch.Tensor, seed: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image smallest L∞ at which PGD succeeds, by bisection on [0, upper]: `start` holds adversarial images
    (e.g. FGSM's) where `found`; images without one are first tried at ε = hi − lo."""
    e, (lo_b, hi_b) = ctx.config.effort, ctx.config.bounds
    gen = torch.Generator().manual_seed(seed)
    with attack_mode(ctx.model.module) as m:
        best, have = start.clone(), found.clone()
        if not bool(have.all()):
            miss = ~have
            span = torch.full((int(miss.sum()),), hi_b - lo_b)
            adv = pgd_linf_per_image(m, x[miss], crit.subset(miss), span, steps=e.bisect_steps, gen=gen,
                                     bounds=(lo_b, hi_b))
            with torch.no_grad():
                ok = crit.subset(miss).is_adversarial(m(adv))
            idx = miss.nonzero().squeeze(1)[ok]
            best[idx], have[idx] = adv[ok], True
        hi = (best - x).flatten(1).abs().amax(1).double()
        lo = torch.zeros_like(hi)
        for _ in range(e.bisect_rounds):
            if not bool(have.any()):
                break
            mid = (lo + hi) / 2
            adv = pgd_linf_per_image(m, x[have], crit.subset(have), mid[have], steps=e.bisect_steps, gen=gen,
                                     bounds=(lo_b, hi_b))
            with torch.no_grad():
                ok = crit.subset(have).is_adversarial(m(adv))
            idx = have.nonzero().squeeze(1)
            best[idx[ok]] = adv[ok]
            hi[idx[ok]] = mid[idx[ok]]
            lo[idx[~ok]] = mid[idx[~ok]]
        with torch.no_grad():
            verified = crit.is_adversarial(m(best)) & have
    size = torch.where(verified, (best - x).flatten(1).abs().amax(1).double(), torch.full_like(hi, math.inf))
    return best, size


def minimal_linf_stage(ctx: Ctx, clean: dict[str, Any]) -> dict[str, Any]:
    """Per-image minimal L∞: FGSM's smallest ε (all images) and a PGD-L∞ bisection started from it (the first
    images, and every image FGSM failed on)."""
    e, cfg = ctx.config.effort, ctx.config
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    names = list(LINF_ATTACKS)

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), ~correct[rows]
            r = attack("fgsm-min", ctx, x, crit, eps_max=cfg.span)
            out = {f"fgsm-min.{k}": v for k, v in _minimal_fields(r, cfg.linf_grid, "linf", err).items()}
            # the first images, and every image FGSM failed on (so that the per-image best covers all images)
            take = (torch.arange(rows.start, rows.stop) < e.bisect_images) | ~r.success.cpu()
            fields = {"size": torch.empty(0), "at": torch.empty(0, len(cfg.linf_grid))}
            if bool(take.any()):
                sub = take.to(x.device)
                best, size = _bisect(ctx, x[sub], crit.subset(sub), r.x_adv[sub], r.success[sub],
                                     chunk_seed(cfg.seed, i, 1))
                size = torch.where(err[take].to(size.device), torch.zeros_like(size), size)
                eps = torch.tensor(cfg.linf_grid, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
                xs = x[sub].unsqueeze(0)
                clipped = (xs + (best.unsqueeze(0) - xs).clamp(-eps, eps)).clamp(*cfg.bounds)
                with torch.no_grad(), attack_mode(ctx.model.module) as m:
                    ok = torch.stack([crit.subset(sub).is_adversarial(m(c)) for c in clipped])
                ok &= torch.isfinite(size).to(ok.device).unsqueeze(0)
                fields = {"size": size.cpu(), "at": (ok.T | err[take].to(ok.device).unsqueeze(1)).double().cpu()}
            out.update({f"pgd-bisection.{k}": v for k, v in _pad(len(take), take, fields).items()})
            return out

        fields = ctx.runner.map(fn, ctx.n, f"minimal L-inf {ctx.model.name}")
        return {**_summary(fields, cfg.linf_grid, names, correct), "eps": list(cfg.linf_grid), "skipped": {},
                "params": {"fgsm-min": {"eps_max": cfg.span},
                           "pgd-bisection": {"images": min(e.bisect_images, ctx.n), "rounds": e.bisect_rounds,
                                             "steps": e.bisect_steps}}}

    return ctx.runner.run(f"minimal-linf-{ctx.model.name}", ctx.inputs(), compute)[0]


def _clipped(minimal: dict[str, Any], k: int) -> dict[str, torch.Tensor]:
    """Per image and budget, whether each minimal attack's clipped example is adversarial (False where not run)."""
    return {name: torch.tensor([[bool(v) for v in row] for row in rec["at"]], dtype=torch.bool).view(-1, k)
            for name, rec in minimal["attacks"].items()}


def curves_stage(ctx: Ctx, clean: dict[str, Any], minimal: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], Path]:
    """Robust accuracy against ε, L∞ and L2: PGD at each ε in ascending order on the images still robust (an image
    broken at ε stays broken above it), with PGD at the reference ε run on every image (the transfer set); each
    minimal attack's examples clipped to ε; and the envelope (broken by any of them)."""
    e, cfg = ctx.config.effort, ctx.config
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    ref_k = cfg.linf_grid.index(cfg.eps_ref)

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), (~correct[rows]).to(ctx.x.device)
            out: dict[str, torch.Tensor] = {}
            for norm, grid, salt in (("linf", cfg.linf_grid, 10), ("l2", cfg.l2_grid, 50)):
                broken, steps = err.clone(), []
                for k, eps in enumerate(grid):
                    todo = torch.ones_like(broken) if (norm == "linf" and k == ref_k) else ~broken
                    if bool(todo.any()):
                        r = pgd(ctx.model.module, x[todo], crit.subset(todo), [eps], norm=norm, steps=e.pgd_steps,
                                seed=chunk_seed(cfg.seed, i, salt + k), bounds=cfg.bounds)
                        broken[todo] |= r.success[0]
                        if norm == "linf" and k == ref_k:
                            out["ref_adv"], out["ref_ok"] = r.x_adv[0].cpu(), (r.success[0] | err).cpu()
                    steps.append(broken.clone())
                out[norm] = torch.stack(steps, 1).cpu()
            return out

        fields = ctx.runner.map(fn, ctx.n, f"robust curves {ctx.model.name}")
        save_tensors(folder, "transfer_set.safetensors", {"x_adv": fields["ref_adv"], "success": fields["ref_ok"]})
        result: dict[str, Any] = {"eps_ref": cfg.eps_ref, "pgd_steps": e.pgd_steps}
        for norm, grid in (("linf", cfg.linf_grid), ("l2", cfg.l2_grid)):
            pgd_broken = fields[norm]
            lines = {"PGD": robust_curve(pgd_broken)}
            envelope = pgd_broken.clone()
            for name, broken in _clipped(minimal[norm], len(grid)).items():
                ran = minimal[norm]["attacks"][name]["ran_on"]
                label = f"{name} (clipped)" if ran == ctx.n else f"{name} (clipped, on {ran} images)"
                lines[label] = minimal[norm]["attacks"][name]["curve"]
                envelope |= broken
            lines["any attack"] = robust_curve(envelope)
            result[norm] = {"eps": list(grid), "lines": lines}
            if norm == "linf":  # per image, broken by any attack at the reference ε (for the restarts check)
                result["broken_ref"] = as_list(envelope[:, ref_k])
        return result

    return ctx.runner.run(f"curves-{ctx.model.name}", ctx.inputs(), compute)


__all__ = ["clean_stage", "minimal_l2_stage", "minimal_linf_stage", "curves_stage"]
