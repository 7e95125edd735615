"""The attack stages of an audit, per model: clean accuracy, minimal L2 and L∞ perturbations, robust accuracy
against ε. Every per-image loop runs over fixed chunks (runner.map) with randomness seeded per chunk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..attacks import TargetedMisclassification
from ..attacks.apgd import apgd
from ..attacks.base import attack_mode
from ..attacks.bpda import gradient_probe
from ..attacks.pgd import pgd_linf_per_image
from ..models import predict_logits
from ..models.external import check_outputs
from .common import Ctx, as_list, attack, quantiles, robust_curve, supports_bounds
from .config import first
from .runner import chunk_seed, save_tensors

PROBE_IMAGES = 64  # correctly classified images of the gradient probe

L2_ATTACKS = ("deepfool", "minimal-l2", "lbfgs")
LINF_ATTACKS = ("fgsm-min", "pgd-bisection")
DECISION = "hopskipjump"  # the decision-based minimal attack (top-1 label only), L2 and L∞
# HopSkipJump-L2's γ where the gradients are unusable: the paper's γ = 1 probes the boundary at δ = γ·dist/d, which on a
# quantised input moves no pixel across a rounding step. Measured on the masked control (rounding to quarters), 20
# digits, 2,000 queries: median L2 6.5 at γ = 1, 3.8 at 30, 2.4 at 300, 2.7 at 1000; the unmasked net 2.0 at 1 and 300.
# L∞ keeps γ = 1 (0.125 there, the rounding's half step; 0.36 at γ = 300).
UNUSABLE_L2_GAMMA = 300.0


def clean_stage(ctx: Ctx) -> dict[str, Any]:
    """Accuracy, the kind of output (logits or log-probabilities; probabilities are refused) and per-image margins
    z_y − max_{j≠y} z_j (negative: misclassified)."""

    def compute(folder: Path | None) -> dict[str, Any]:
        kind = check_outputs(ctx.model.module, ctx.x, ctx.data_id["n_classes"], labels=ctx.y)
        if any(note.startswith("outputs are probabilities") for note in ctx.model.adapted):
            kind["kind"] = "probabilities (attacked as their logarithm)"

        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x = ctx.x[rows]
            return {"logits": predict_logits(ctx.model.module, x, batch_size=max(x.shape[0], 1)).double()}

        z = ctx.runner.map(fn, ctx.n, f"clean {ctx.model.name}")["logits"]
        y = ctx.y.cpu()
        own = z.gather(1, y.unsqueeze(1)).squeeze(1)
        rival = z.scatter(1, y.unsqueeze(1), -math.inf).amax(1)
        correct = z.argmax(1) == y
        pick = correct.nonzero().flatten()[:PROBE_IMAGES].to(ctx.x.device)
        probe = gradient_probe(ctx.model.module, ctx.x[pick], ctx.crit(pick), noise=0.05 * ctx.config.span,
                               seed=ctx.config.seed, bounds=ctx.config.bounds) if pick.numel() else None
        return {"accuracy": float(correct.double().mean()), "n": ctx.n, "errors": int((~correct).sum()),
                "output": kind, "gradients": probe, "probe_rows": [int(i) for i in pick.tolist()], "correct": as_list(correct), "margin": as_list(own - rival)}

    return ctx.runner.run(f"clean-{ctx.model.name}", ctx.inputs(), compute)[0]


def _minimal_fields(r: Any, grid: tuple[float, ...], norm: str, clean_err: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: the size of the found perturbation (0 for a clean error, inf where the attack failed) and whether
    the example, clipped to each budget of the grid, is still adversarial."""
    size = torch.where(r.success, r.measure(norm).double(), torch.full_like(r.l2, math.inf, dtype=torch.float64))
    size = torch.where(clean_err.to(size.device), torch.zeros_like(size), size)
    _, ok = r.at(grid, norm)
    x = torch.where(r.success.view(-1, *([1] * (r.x.dim() - 1))), r.x_adv, torch.full_like(r.x_adv, math.nan))
    return {"size": size.cpu(), "at": (ok.T | clean_err.to(ok.device).unsqueeze(1)).double().cpu(), "x": x.cpu()}


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


def gradients_unusable(clean: dict[str, Any]) -> str:
    """Why the clean stage's gradient probe found the input gradients unusable ("" if usable): unavailable (its
    "unavailable" reason: no graph to the input, None or non-finite gradients) or masked (zero on most images)."""
    probe = clean.get("gradients") or {}
    if probe.get("unavailable"):
        return f"input gradients unavailable: {probe['unavailable']}"
    return "the gradient probe found the input gradients masked" if probe.get("masked") else ""


def _decision_plan(ctx: Ctx, clean: dict[str, Any], norm: str) -> dict[str, Any]:
    """HopSkipJump's images and parameters in a minimal stage: every image where the gradients are unusable, else the
    first `hsj_images`, a decision-based check beside the gradient attacks."""
    e, why = ctx.config.effort, gradients_unusable(clean)
    images = ctx.n if why else min(e.hsj_images, ctx.n)
    params = {"norm": norm, "max_queries": e.hsj_queries_unusable if why else e.hsj_queries}
    if why and norm == "l2":
        params["gamma"] = UNUSABLE_L2_GAMMA
    return {"images": images, "params": params,
            "why": f"{why}: on every image" if why else f"a check on the first {images} images (top-1 labels only)"}


def _decision_fields(ctx: Ctx, plan: dict[str, Any], i: int, rows: slice, crit: Any, err: torch.Tensor,
                     grid: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """HopSkipJump's fields for one chunk (NaN on the images beyond the plan's), seeded per chunk."""
    x, norm = ctx.x[rows], plan["params"]["norm"]
    take = torch.arange(rows.start, rows.stop) < plan["images"]
    fields = {"size": torch.empty(0), "at": torch.empty(0, len(grid)), "x": torch.empty(0, *x.shape[1:])}
    if bool(take.any()):
        sub = take.to(x.device)
        r = attack(DECISION, ctx, x[sub], crit.subset(sub), **plan["params"], seed=chunk_seed(ctx.config.seed, i, 7))
        fields = _minimal_fields(r, grid, norm, err[take])
    return {f"{DECISION}.{k}": v for k, v in _pad(len(take), take, fields).items()}


def _without_gradients(ctx: Ctx, names: list[str], skipped: dict[str, str]) -> list[str]:
    """The gradient attacks left out (each named in `skipped`) where no input gradient can be had, not even through
    BPDA (ctx.gradient_free, set by audit.adaptive); where BPDA restores one, they run through it."""
    if not ctx.gradient_free:
        return names
    skipped.update({a: ctx.gradient_free for a in names})
    return []


def minimal_l2_stage(ctx: Ctx, clean: dict[str, Any]) -> dict[str, Any]:
    """Per-image minimal L2 from DeepFool, minimal-l2 (box [0, 1] only) and L-BFGS (small models, first images), and
    HopSkipJump (decision-based: every image where the gradients are unusable, else the first images)."""
    e, cfg = ctx.config.effort, ctx.config
    names = [a for a in L2_ATTACKS if supports_bounds(a, cfg.bounds)]
    skipped = {a: f"works in the box [0, 1] only; the data's bounds are {list(cfg.bounds)}"
               for a in L2_ATTACKS if a not in names}
    names = _without_gradients(ctx, names, skipped)
    plan = _decision_plan(ctx, clean, "l2")
    heavy = ctx.model.macs > e.heavy_macs
    if "lbfgs" in names and heavy:
        names.remove("lbfgs")
        skipped["lbfgs"] = (f"skipped for speed: {ctx.model.macs:,} multiply-adds per image > "
                            f"{e.heavy_macs:,.0f}")
    limit = {"lbfgs": first(e.lbfgs_images, ctx.n), "minimal-l2": e.heavy_images if heavy else ctx.n}
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    params = {"deepfool": {"candidates": 4} if heavy else {}, "minimal-l2": dict(e.minimal_l2), "lbfgs": {}}

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), ~correct[rows]
            index = torch.arange(rows.start, rows.stop)
            out: dict[str, torch.Tensor] = {}
            for name in names:
                take = index < limit.get(name, ctx.n)
                if not bool(take.any()):
                    fields = {"size": torch.empty(0), "at": torch.empty(0, len(cfg.l2_grid)),
                              "x": torch.empty(0, *x.shape[1:])}
                else:
                    sub = take.to(x.device)
                    r = attack(name, ctx, x[sub], crit.subset(sub), **params[name])
                    fields = _minimal_fields(r, cfg.l2_grid, "l2", err[take])
                out.update({f"{name}.{k}": v for k, v in _pad(len(index), take, fields).items()})
            return out | _decision_fields(ctx, plan, i, rows, crit, err, cfg.l2_grid)

        fields = ctx.runner.map(fn, ctx.n, f"minimal L2 {ctx.model.name}")
        save_tensors(folder, "examples.safetensors", {k[:-2]: v.float() for k, v in fields.items() if k.endswith(".x")})
        return {**_summary(fields, cfg.l2_grid, [*names, DECISION], correct), "eps": list(cfg.l2_grid),
                "skipped": skipped, "params": {k: params[k] for k in names} | {DECISION: plan["params"]},
                "decision_based": plan["why"]}

    return ctx.runner.run(f"minimal-l2-{ctx.model.name}", ctx.inputs(), compute)


def _bisect(ctx: Ctx, x: torch.Tensor, crit: Any, start: torch.Tensor, found: torch.Tensor, seed: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image smallest L∞ at which PGD succeeds, by bisection on [0, upper]: `start` holds adversarial images
    (e.g. FGSM's) where `found`; images without one are first tried at ε = hi − lo."""
    e, (lo_b, hi_b) = ctx.config.effort, ctx.config.bounds
    gen = torch.Generator().manual_seed(seed)
    with attack_mode(ctx.target) as m:
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
    skipped: dict[str, str] = {}
    names = _without_gradients(ctx, list(LINF_ATTACKS), skipped)
    plan = _decision_plan(ctx, clean, "linf")

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, crit, err = ctx.x[rows], ctx.crit(rows), ~correct[rows]
            decision = _decision_fields(ctx, plan, i, rows, crit, err, cfg.linf_grid)
            if not names:
                return decision
            r = attack("fgsm-min", ctx, x, crit, eps_max=cfg.span)
            out = {f"fgsm-min.{k}": v for k, v in _minimal_fields(r, cfg.linf_grid, "linf", err).items()}
            # the first images, and every image FGSM failed on (so that the per-image best covers all images)
            take = (torch.arange(rows.start, rows.stop) < first(e.bisect_images, ctx.n)) | ~r.success.cpu()
            fields = {"size": torch.empty(0), "at": torch.empty(0, len(cfg.linf_grid)),
                      "x": torch.empty(0, *x.shape[1:])}
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
                fields = {"size": size.cpu(), "at": (ok.T | err[take].to(ok.device).unsqueeze(1)).double().cpu(),
                          "x": torch.where(torch.isfinite(size).view(-1, 1, 1, 1).to(best.device), best,
                                           torch.full_like(best, math.nan)).cpu()}
            out.update({f"pgd-bisection.{k}": v for k, v in _pad(len(take), take, fields).items()})
            return out | decision

        fields = ctx.runner.map(fn, ctx.n, f"minimal L-inf {ctx.model.name}")
        save_tensors(folder, "examples.safetensors", {k[:-2]: v.float() for k, v in fields.items() if k.endswith(".x")})
        params = {"fgsm-min": {"eps_max": cfg.span},
                  "pgd-bisection": {"images": first(e.bisect_images, ctx.n), "rounds": e.bisect_rounds,
                                    "steps": e.bisect_steps}}
        return {**_summary(fields, cfg.linf_grid, [*names, DECISION], correct), "eps": list(cfg.linf_grid),
                "skipped": skipped, "params": {k: params[k] for k in names} | {DECISION: plan["params"]},
                "decision_based": plan["why"]}

    return ctx.runner.run(f"minimal-linf-{ctx.model.name}", ctx.inputs(), compute)


def _clipped(minimal: dict[str, Any], k: int) -> dict[str, torch.Tensor]:
    """Per image and budget, whether each minimal attack's clipped example is adversarial (False where not run)."""
    return {name: torch.tensor([[bool(v) for v in row] for row in rec["at"]], dtype=torch.bool).view(-1, k)
            for name, rec in minimal["attacks"].items()}


def _chain(ctx: Ctx, x: torch.Tensor, y: torch.Tensor, clean_logits: torch.Tensor, eps: float, norm: str,
           seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD as AutoAttack runs it, each attack on the images the previous ones left robust: APGD-CE, APGD-DLR, then
    targeted APGD-DLR towards each of the `apgd_targets` highest other classes. (examples, broken) per image."""
    from ..attacks import Misclassification

    e, cfg = ctx.config.effort, ctx.config
    kw = {"norm": norm, "steps": e.apgd_steps, "eot": ctx.eot, "bounds": cfg.bounds}
    adv, broken = x.clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    rate = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)  # share of draws misclassifying adv
    n_classes = clean_logits.shape[1]
    rivals = clean_logits.scatter(1, y.view(-1, 1), -math.inf).argsort(1, descending=True)
    runs: list[tuple[str, int]] = [("ce", -1), ("dlr", -1)]
    if n_classes >= 4:
        runs += [("dlr", t) for t in range(min(e.apgd_targets, n_classes - 1))]
    for j, (loss, t) in enumerate(runs):
        todo = ~broken
        if not bool(todo.any()):
            break
        if loss == "dlr" and n_classes < 3:
            continue
        crit = Misclassification(y[todo]) if t < 0 else TargetedMisclassification(rivals[todo, t], y[todo])
        r = apgd(ctx.target, x[todo], crit, [eps], loss=loss, seed=seed * 7 + j, **kw)
        idx = todo.nonzero().flatten()
        # re-verified on the model itself (a targeted success must also be a misclassification); a random model's
        # over `eot` draws: broken when misclassified on most, each image keeping its most often misclassified example
        with torch.no_grad(), attack_mode(ctx.model.module) as m:
            wrong = torch.stack([m(r.x_adv[0]).argmax(1) != y[todo] for _ in range(ctx.eot)]).double().mean(0)
        ok = wrong > 0.5
        keep = (wrong > rate[idx]) | (j == 0)
        adv[idx[keep]] = r.x_adv[0][keep]
        rate[idx[keep]] = wrong[keep]
        broken[idx[ok]] = True
    if ctx.eot > 1:  # a random model: PGD with EOT on every image too, each keeping its most often wrong example
        from .adaptive import eot_pgd

        sub = rate < 0.9  # the images no example breaks on 90% of the draws yet
        if bool(sub.any()):
            cand = eot_pgd(ctx.target, x[sub], y[sub], eps, norm, max(50, 4 * e.apgd_steps), ctx.eot,
                           cfg.bounds)
            with torch.no_grad(), attack_mode(ctx.model.module) as m:
                wrong = torch.stack([m(cand).argmax(1) != y[sub] for _ in range(ctx.eot)]).double().mean(0)
            idx, keep = sub.nonzero().flatten(), wrong > rate[sub]
            adv[idx[keep]], rate[idx[keep]] = cand[keep], wrong[keep]
            broken[idx[wrong > 0.5]] = True
    return adv, broken


def curves_stage(ctx: Ctx, clean: dict[str, Any], minimal: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], Path]:
    """Robust accuracy against ε, L∞ and L2: APGD (CE, DLR, targeted DLR; through BPDA / with EOT when the model
    calls for it) at each ε in ascending order on the images still robust (an image broken at ε stays broken above
    it, its example carried), every image attacked at the reference ε (the transfer set); each minimal attack's
    examples clipped to ε; and their envelope. The examples are saved for the verdict."""
    e, cfg = ctx.config.effort, ctx.config
    correct = torch.tensor(clean["correct"], dtype=torch.bool)
    ref_k = cfg.linf_grid.index(cfg.eps_ref)

    def compute(folder: Path | None) -> dict[str, Any]:
        def fn(i: int, rows: slice) -> dict[str, torch.Tensor]:
            x, y, err = ctx.x[rows], ctx.y[rows], (~correct[rows]).to(ctx.x.device)
            with torch.no_grad(), attack_mode(ctx.model.module) as m:
                z = m(x)
            out: dict[str, torch.Tensor] = {}
            for norm, grid, salt in (("linf", cfg.linf_grid, 10), ("l2", cfg.l2_grid, 50)):
                broken, steps, examples = err.clone(), [], []
                current = x.clone()
                for k, eps in enumerate(grid):
                    # every image at the reference ε (the transfer set) and, for a random model (whose successes
                    # are only likely), at every ε
                    todo = torch.ones_like(broken) if (norm == "linf" and k == ref_k) or ctx.eot > 1 else ~broken
                    if bool(todo.any()):
                        adv, ok = _chain(ctx, x[todo], y[todo], z[todo], eps, norm, chunk_seed(cfg.seed, i, salt + k))
                        idx = todo.nonzero().flatten()
                        replace = ok | ~broken[idx]  # a broken image keeps its example from a smaller ε
                        current[idx[replace]] = adv[replace]
                        broken[idx[ok]] = True
                    steps.append(broken.clone())
                    examples.append(current.clone())
                    if norm == "linf" and k == ref_k:
                        out["ref_adv"], out["ref_ok"] = current.cpu(), (broken | err).cpu()
                out[norm] = torch.stack(steps, 1).cpu()
                out[f"{norm}_adv"] = torch.stack(examples, 1).cpu()
            return out

        fields = ctx.runner.map(fn, ctx.n, f"robust curves {ctx.model.name}")
        save_tensors(folder, "transfer_set.safetensors", {"x_adv": fields["ref_adv"], "success": fields["ref_ok"]})
        save_tensors(folder, "examples.safetensors", {"linf": fields["linf_adv"], "l2": fields["l2_adv"]})
        result: dict[str, Any] = {"eps_ref": cfg.eps_ref, "apgd_steps": e.apgd_steps, "apgd_targets": e.apgd_targets,
                                  "adaptive": dict(ctx.adaptive)}
        for norm, grid in (("linf", cfg.linf_grid), ("l2", cfg.l2_grid)):
            apgd_broken = fields[norm]
            lines = {"APGD": robust_curve(apgd_broken)}
            envelope, gradient = apgd_broken.clone(), apgd_broken.clone()
            for name, broken in _clipped(minimal[norm], len(grid)).items():
                ran = minimal[norm]["attacks"][name]["ran_on"]
                label = f"{name} (clipped)" if ran == ctx.n else f"{name} (clipped, on {ran} images)"
                lines[label] = minimal[norm]["attacks"][name]["curve"]
                envelope |= broken
                if name != DECISION:  # Square-L2 checks the gradient attacks: HopSkipJump is gradient-free
                    gradient |= broken
            lines["APGD and minimal attacks"] = robust_curve(envelope)
            result[norm] = {"eps": list(grid), "lines": lines}
            if norm == "linf":  # per image, broken by these attacks at the reference ε (for the restarts check)
                result["broken_ref"] = as_list(envelope[:, ref_k])
            else:  # per ε and image, broken by the gradient L2 attacks (Square-L2 runs on the rest)
                result["broken_l2"] = [as_list(gradient[:, k]) for k in range(len(grid))]
        return result

    return ctx.runner.run(f"curves-{ctx.model.name}", ctx.inputs(adaptive=ctx.adaptive), compute)


__all__ = ["clean_stage", "minimal_l2_stage", "minimal_linf_stage", "curves_stage"]
