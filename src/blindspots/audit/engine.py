"""`run_audit(config)`: every stage of the audit for every model (resumable, split across torchrun processes),
then results.json and the report built from it alone (rank 0 writes; the others compute with it)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import __version__, parallel
from ..data.user import load_eval_data
from ..errors import InputError
from ..io import write_json_atomic
from .analysis import transfer_stage
from .bounds import bounds_stage
from .checks import CHECKS, AuditCheck
from .common import Ctx
from .config import CHUNK, QUERY_CHUNK, AuditConfig, first
from .models import load_models
from .runner import AuditRunner
from .sanity import sanity_lines
from .verdict import verdict_stage

PARTS = (*(c.part for c in CHECKS if c.timed), "transfer", "verdict", "bounds")  # wall_time_s's parts


def _lean(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage result for results.json: without its cache record and the per-image flags only later stages read."""
    out = {k: v for k, v in stage.items() if k not in ("_stage", "correct", "margin", "broken_ref", "broken_l2", "probe_rows")}
    if "attacks" in out:
        out["attacks"] = {a: {k: v for k, v in rec.items() if k != "at"} for a, rec in out["attacks"].items()}
    return out


def run_audit(config: AuditConfig, announce: Callable[[str], None] = print,
              checks: list[AuditCheck] | None = None) -> dict[str, Any]:
    """Run (or resume) the audit under config.out; returns results.json's content (on every rank). `checks`: the
    per-model checks, in order (default CHECKS); transfer, the verdict and the bounds then run across models."""
    checks = CHECKS if checks is None else checks
    world = parallel.init_from_env(config.device)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    runner = AuditRunner(config.out, world, announce, config.progress)
    t0 = time.perf_counter()
    data = load_eval_data(config.data, split=config.split, n=config.n, bounds=config.bounds)
    x, y = data.images.to(config.device), data.labels.to(config.device)
    models = load_models(config, x)
    data_id = {"name": data.name, "source": dict(data.source), "split": config.split, "n": len(data),
               "shape": list(x.shape[1:]), "bounds": list(config.bounds), "n_classes": data.n_classes}
    timings["load models and data"] = time.perf_counter() - t0
    runner.announce(f"audit of {', '.join(m.name for m in models)} on {len(data)} images of {data.name} "
                    f"(ε L∞ {list(config.linf_grid)}, L2 {list(config.l2_grid)}) → {config.out}")

    def timed(part: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - t
        return out

    per_model: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[dict[str, Any], Any]] = {}
    folders: dict[str, dict[str, Any]] = {}
    minimal_linf: dict[str, dict[str, Any]] = {}
    ctxs: list[Ctx] = []
    failed: dict[str, dict[str, str]] = {}
    for m in models:
        ctx = Ctx(config, runner, x, y, m, data_id)
        rec: dict[str, Any] = {}
        where: dict[str, Any] = {}
        part = checks[0].part if checks else ""
        try:  # a stage that fails for one model is recorded, and the other models go on
            for check in checks:
                part = check.part
                out = _run_check(check, ctx, rec, timed)
                if check.folder is not None:
                    out, where[check.folder] = out
                if check.record is not None:
                    rec[check.record] = out
        except Exception as exc:  # noqa: BLE001 - any failure of a user's model is reported, not raised
            if isinstance(exc, InputError) and part == "clean" and len(models) == 1:
                raise  # the one model's outputs are refused: the clear error is the answer
            failed[m.name] = _failure(part, exc)
            runner.announce(f"  {m.name}: stage {part} failed ({failed[m.name]['error']}); the audit goes on "
                            "without this model")
            continue
        if "curves" in rec:
            curves[m.name] = (rec["curves"], where["curves"])
        if "minimal_linf" in rec:
            minimal_linf[m.name] = rec["minimal_linf"]
        ctxs.append(ctx)
        per_model[m.name] = {k: _lean(v) for k, v in rec.items()}
        folders[m.name] = {**where, "clean": rec["clean"]}
    transfer = timed("transfer", lambda: transfer_stage(runner, ctxs, curves, tuple(config.zoo))) if ctxs else \
        {"eps_ref": config.eps_ref, "sources": [], "targets": [], "matrix": {}, "clean_error": {}}
    for ctx in ctxs:  # the verdict of each model reads every attack's examples, the other models' transferred too
        name = ctx.model.name
        others = {c.model.name: curves[c.model.name][1] for c in ctxs if c is not ctx}
        clean = folders[name].pop("clean")
        try:
            verdict = timed("verdict", lambda: verdict_stage(ctx, clean, folders[name], others))
        except Exception as exc:  # noqa: BLE001
            failed[name] = _failure("verdict", exc)
            per_model.pop(name)
            continue
        per_model[name]["verdict"] = _lean(verdict)
        try:
            per_model[name]["bounds"] = _lean(timed("bounds", lambda: bounds_stage(
                ctx, clean, minimal_linf[name], folders[name]["minimal_linf"], verdict)))
        except Exception as exc:  # noqa: BLE001 - the certified side is optional: said, not fatal
            per_model[name]["bounds"] = {"supported": False, "reason": f"the bounds stage failed ({_line(exc)})"}

    results: dict[str, Any] = {
        "audit": "blindspots audit", "config": config.describe(), "data": data_id,
        "models": [m.describe() for m in models], "per_model": per_model, "transfer": _lean(transfer),
        "failed": failed,
        "stages": [vars(r) for r in runner.stages.log] if runner.stages else [],
        "facts": _facts(config, models, data_id, world.size),
    }
    results["sanity"] = sanity_lines(results)
    results["wall_time_s"] = {k: round(v, 2) for k, v in timings.items()}
    if world.is_main:
        from .report import write_all

        t = time.perf_counter()
        results["wall_time_s"]["total"] = round(time.perf_counter() - t_start, 2)
        write_json_atomic(config.out / "results.json", results, sort_keys=False)
        results = json.loads((config.out / "results.json").read_text(encoding="utf-8"))
        write_all(results, config.out)
        announce(f"  report: {config.out / 'report.html'} (audit {time.perf_counter() - t_start:.0f} s, of which "
                 f"report {time.perf_counter() - t:.1f} s)")
    parallel.barrier(world)
    return results


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _run_check(check: AuditCheck, ctx: Ctx, rec: dict[str, Any], timed: Callable[[str, Callable[[], Any]], Any]) -> Any:
    """One check on one model: timed under its part; an optional check's failure is said in its own record."""
    def run() -> Any:
        return timed(check.part, lambda: check.run(ctx, rec)) if check.timed else check.run(ctx, rec)

    if check.optional is None:
        return run()
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - any failure of a user's model is reported, not raised
        return check.optional(f"the stage failed ({_line(exc)})")


def _failure(part: str, exc: BaseException) -> dict[str, str]:
    """A failed stage as results.json records it: which, and the error's first line."""
    return {"stage": part, "error": _line(exc)}


def _facts(config: AuditConfig, models: list[Any], data_id: dict[str, Any], world_size: int) -> dict[str, Any]:
    e = config.effort
    return {
        "versions": {"blindspots": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": config.device, "processes": world_size,
        "choices": {
            "models": "; ".join(f"{m.name}: {m.source}" + (f", weights {m.weights}" if m.weights else "")
                                + (f" (sha256 {m.weights_sha256})" if m.weights_sha256 else "")
                                + f", identity (state, behaviour, structure, code) sha256 {m.key[:16]}…"
                                for m in models),
            "data": f"{data_id['name']} ({data_id['split']}), {data_id['n']} images of shape {data_id['shape']}, "
                    f"bounds {data_id['bounds']}; md5 " + ", ".join(f"{k} {v}" for k, v in data_id["source"].items()),
            "normalisation": "none" if config.mean is None else
                             f"attacks.Normalized(model, mean={list(config.mean)}, std={list(config.std or ())}); "
                             "attacks work in the data's own space",
            "seed": f"{config.seed}; randomness per chunk of {CHUNK} images ({QUERY_CHUNK} for Square) seeded from "
                    "(seed, chunk index) only, so any number of processes gives the same numbers",
            "budgets": f"L∞ {list(config.linf_grid)}, L2 {list(config.l2_grid)}; reference ε (transfer, sanity "
                       f"runs) {config.eps_ref:g}",
            "robust_accuracy": f"the verdict: per image and ε, broken when any example of any attack the audit ran "
                               "(APGD, minimal attacks clipped to ε, independent PGD per ε, PGD restarts, Square L∞ and L2, "
                               "examples transferred from the other audited models), projected onto the ε-ball, is "
                               "misclassified by a fresh forward pass of the model; clean errors count as broken. "
                               f"APGD: {e.apgd_steps} steps each of CE, DLR and targeted DLR towards the "
                               f"{e.apgd_targets} highest other classes, in ascending ε on the images still robust; "
                               "straight-through gradients (BPDA) where the gradient probe finds masking or --bpda "
                               f"names layers; EOT over {e.eot_samples} draws for a model with random outputs, "
                               f"whose every robust accuracy is the mean probability of the correct label over "
                               f"{e.draws} seeded draws",
            "minimal_perturbations": f"L2: DeepFool, minimal-l2 {dict(e.minimal_l2)} and L-BFGS on the first "
                                     f"{first(e.lbfgs_images, data_id['n'])} images; models above {e.heavy_macs:,.0f} multiply-adds per "
                                     f"image run minimal-l2 on the first {e.heavy_images} images, DeepFool on the "
                                     f"4 top classes, and no L-BFGS. L∞: FGSM's smallest ε (bisection) and a PGD "
                                     f"bisection ({e.bisect_rounds} rounds of {e.bisect_steps}-step PGD) on the first "
                                     f"{first(e.bisect_images, data_id['n'])} images and every image FGSM failed on. "
                                     f"Both norms: HopSkipJump (decision-based) on the first {e.hsj_images} images, "
                                     f"{e.hsj_queries} queries each; on every image, {e.hsj_queries_unusable} queries, "
                                     f"where the gradient probe finds the input gradients unusable",
            "bounds": f"certified robust accuracy at every ε of both grids by {e.certify_method} (blindspots.verify; IBP "
                      f"for a model with more than {e.certify_max_units} hidden nonlinear units), on every image; the "
                      f"certified L∞ radius (bisection up to the best attack's distance) and the exact minimal L∞ "
                      f"(MILP, HiGHS) on the first {first(e.exact_images, data_id['n'])} images of a piecewise-linear "
                      f"model, each image within {e.exact_max_unstable} unstable units (CROWN bounds over the best "
                      f"attack's ball; IBP's, an upper bound of that count, above the CROWN budget) and "
                      f"{e.exact_time_limit:g} s",
            "distributions": "over the correctly classified images an attack ran on; a failed attack counts as ∞",
            "sanity_runs": f"first {first(e.sanity_images, data_id['n'])} images; {e.restarts} restarts; Square "
                           f"L∞ at the reference ε and L2 at every L2 ε (on the images the gradient L2 attacks left "
                           f"robust), {e.square_queries} queries per image, {e.square_queries_masked} where the "
                           "gradient probe finds masking"
                           + (" (--fast)" if config.fast else ""),
            "processes": f"{world_size} on device {config.device} (torchrun splits the images; same numbers)",
        },
    }


__all__ = ["run_audit", "PARTS"]
