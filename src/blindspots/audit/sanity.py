"""The audit's sanity checks, as lines "PASS/FLAG/SKIP: <model>: <check>: <numbers>", computed from results.json
alone: a FLAG says an attack or the model's outputs behave in a way that makes its robustness numbers suspect
(Carlini et al. 2019, "On Evaluating Adversarial Robustness", §5's checklist)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..report.format import pct

PASS, FLAG, SKIP = "PASS", "FLAG", "SKIP"


def line(status: str, model: str, check: str, numbers: str) -> dict[str, str]:
    """One check's outcome, and its printed line."""
    return {"status": status, "model": model, "check": check, "numbers": numbers,
            "line": f"{status}: {model}: {check}: {numbers}"}


def monotone_violations(eps: Sequence[float], robust: Sequence[float | None]) -> list[str]:
    """Where robust accuracy rises with ε (success falls): "ε a → b: x → y" for each such step."""
    out = []
    pairs = [(float(e), float(r)) for e, r in zip(eps, robust) if r is not None and not math.isnan(float(r))]
    for (e0, r0), (e1, r1) in zip(pairs, pairs[1:]):
        if r1 > r0 + 1e-12:
            out.append(f"ε {e0:g} → {e1:g}: robust accuracy {pct(r0)} → {pct(r1)}")
    return out


def check_monotone(model: str, curves: dict[str, tuple[Sequence[float], Sequence[float | None]]]) -> dict[str, str]:
    """One line: is every curve's success (1 − robust accuracy) non-decreasing in ε?"""
    bad = [f"{name}: {v}" for name, (eps, robust) in curves.items() for v in monotone_violations(eps, robust)]
    numbers = f"{len(curves)} curves checked ({', '.join(curves)})"
    if bad:
        return line(FLAG, model, "success monotone in ε", f"{numbers}; rises: " + "; ".join(bad))
    return line(PASS, model, "success monotone in ε", numbers)


def _tolerance(images: int) -> float:
    return max(2 / max(images, 1), 0.02)


ROUNDING = 1e-9  # float slack in comparisons at the tolerance (0.24 vs 0.26 − 0.02 is a PASS)


def adaptive_lines(name: str, m: dict[str, Any]) -> list[dict[str, str]]:
    """Gradient masking (Athalye et al. 2018; Tramèr et al. 2020): zero input gradients while the outputs move,
    a saturated cross-entropy, random outputs. Each FLAG names the adaptive attack the audit switched on."""
    out = []
    probe, adaptive = m["clean"].get("gradients"), m["curves"].get("adaptive", {})
    if probe is None:
        return [line(SKIP, name, "input gradients are not masked", "no correctly classified image to probe")]
    layers = ", ".join(adaptive.get("bpda_layers", [])) or "none"
    bpda = (f"; the audit attacked through straight-through gradients (BPDA): rounding calls "
            f"{'on' if adaptive.get('bpda_rounding_calls') else 'off'}, layers {layers}") if adaptive.get("bpda") else ""
    numbers = (f"margin-loss input gradient exactly zero on {probe['zero_gradient']} of {probe['images']} correctly "
               f"classified images, while uniform noise of ±{probe['noise']:g} changes the outputs of "
               f"{probe['outputs_move']}; layers with zero gradient: {', '.join(probe['zero_layers']) or 'none'}{bpda}")
    approx = adaptive.get("approximated", {})
    if approx:
        numbers += "; approximated in the backward pass: " + "; ".join(
            f"{k}: {v['approximation']}" + (f" (R² {v['r2']:.3f}, labels kept on {pct(v['label_agreement'])} of "
                                            f"{v['held_out_inputs']} held-out inputs)" if "r2" in v else "")
            + (f" ({v['why']})" if "why" in v else "") for k, v in approx.items())
    if probe.get("unavailable"):
        numbers = f"input gradients unavailable: {probe['unavailable']}; " + numbers
    out.append(line(FLAG if probe["masked"] or probe.get("unavailable") else PASS, name,
                    "input gradients are not masked", numbers))
    if probe.get("unavailable"):
        out.append(line(SKIP, name, "cross-entropy does not saturate", "no input gradient of the model to probe"))
    else:
        out.append(line(FLAG if probe["ce_saturated"] else PASS, name, "cross-entropy does not saturate",
                        f"cross-entropy input gradient exactly zero on {probe['ce_zero_gradient']} of "
                        f"{probe['images']} images (huge logits make the softmax one-hot in float; the APGD-DLR and "
                        "margin losses, which the audit also runs, are scale-invariant)"))
    det = m["clean"]["output"].get("deterministic", True)
    out.append(line(PASS if det else FLAG, name, "outputs are deterministic",
                    "two forward passes of the same images agree" if det else
                    f"two forward passes of the same images differ: a randomised model; APGD averaged each gradient "
                    f"over {adaptive.get('eot', 1)} draws (EOT), and every robust accuracy is an expectation over "
                    f"{m.get('verdict', {}).get('linf', {}).get('draws', '?')} draws"))
    return out


def gradient_free_l2_line(name: str, s: dict[str, Any]) -> dict[str, str]:
    """Square-L2, run on the images the gradient L2 attacks (APGD-L2, the minimal L2 attacks clipped) left robust,
    must break no more of them than the tolerance at any L2 ε: else the L2 gradient attacks were fooled (e.g. by
    input quantisation that their spread-out steps stay under); the verdict counts Square's examples either way."""
    check = "gradient-free L2 does not beat gradient attacks"
    g = s.get("gradient_free_l2")
    if g is None:  # results.json of an audit from before Square-L2
        return line(SKIP, name, check, "Square-L2 not run (results of an older audit)")
    tol = _tolerance(s["images"])
    worst = max(o / max(s["images"], 1) for o in g["only"]) if g["only"] else 0.0
    queries = s.get("gradient_free_params", {}).get("n_queries")
    per_eps = "; ".join(f"ε = {e:g}: broke {o} of the {r} it ran on, robust accuracy {pct(a)} → {pct(b)}"
                        for e, o, r, a, b in zip(g["eps"], g["only"], g["ran"], g["robust_gradient"],
                                                 g["robust_with_square"]))
    return line(PASS if worst <= tol + ROUNDING else FLAG, name, check,
                f"Square attack (L2{f', {queries} queries' if queries else ''}) on the images of {s['images']} that "
                f"APGD-L2 and the minimal L2 attacks left robust: {per_eps} (gradient attacks → with Square; "
                f"tolerance {pct(tol)})")


def evidence(m: dict[str, Any]) -> str:
    """What kind of evidence the model's robustness numbers are: gradient-based (on the model's own gradients or
    through BPDA / fitted stand-ins), gradient-free only; and an expectation over R draws for a random model."""
    adaptive = m["curves"].get("adaptive", {})
    if adaptive.get("gradient_free"):
        kind = "gradient-free only (Square, transfer)"
    else:
        fitted = [k for k, v in adaptive.get("approximated", {}).items() if v.get("approximation") == "fitted stand-in"]
        kind = ("gradient-based through fitted stand-ins of " + ", ".join(fitted) if fitted else
                "gradient-based through straight-through gradients (BPDA)" if adaptive.get("bpda") else
                "gradient-based (the model's own gradients)") + ", with gradient-free and transfer attacks"
    draws = m.get("verdict", {}).get("linf", {}).get("draws")
    return kind + (f"; each number an expectation over {draws} draws of the model's randomness" if draws else "")


def evidence_line(name: str, m: dict[str, Any]) -> dict[str, str]:
    """FLAG where no gradient could be had, not even through BPDA: the numbers then rest on gradient-free attacks
    alone, which miss what a gradient attack finds (Carlini et al. 2019 §5)."""
    why = m["curves"].get("adaptive", {}).get("gradient_free")
    return line(FLAG if why else PASS, name, "gradient attacks could run",
                (f"{why}; audited by gradient-free attacks alone" if why else "evidence: " + evidence(m)))


def model_lines(name: str, m: dict[str, Any]) -> list[dict[str, str]]:
    """The per-model checks: monotone, unbounded budget, restarts, gradient-free (L∞, L2), logits."""
    s = m["sanity_runs"]
    curves: dict[str, tuple[Any, Any]] = {}
    if s.get("gradients_unavailable") is None:
        curves["independent PGD-L∞ (first {} images)".format(s["images"])] = (s["eps"], s["independent_pgd"])
    for norm, label in (("minimal_linf", "L∞"), ("minimal_l2", "L2")):
        for attack, rec in m[norm]["attacks"].items():
            first = "" if rec.get("ran_on", m["clean"]["n"]) == m["clean"]["n"] else f", on {rec['ran_on']} images"
            curves[f"{attack} clipped ({label}{first})"] = (m[norm]["eps"], rec["curve"])
    for norm, label in (("linf", "L∞"), ("l2", "L2")):  # the verdict's own curves
        v = m.get("verdict", {}).get(norm)
        if v is not None:
            curves[f"verdict ({label})"] = (v["eps"], v["robust"])
    out = [check_monotone(name, curves), evidence_line(name, m)]
    if s.get("gradients_unavailable") is not None:
        skip = "not run: " + s["gradients_unavailable"]
        out += [line(SKIP, name, c, skip) for c in ("100% success at an unbounded budget",
                                                     "restarts do not change the verdict",
                                                     "gradient-free does not beat gradient attacks")]
        return out + [gradient_free_l2_line(name, s), _logits_line(name, m)] + adaptive_lines(name, m)

    unbounded = 1 - s["robust"]["unbounded"]
    minimal = {a: rec["success_rate"] for norm in ("minimal_l2", "minimal_linf")
               for a, rec in m[norm]["attacks"].items()}
    missed = {label: m[norm]["best"]["stats"]["failed"] for norm, label in (("minimal_l2", "L2"), ("minimal_linf", "L∞"))}
    numbers = (f"PGD-L∞ at ε = hi − lo = {s['span']:g}: {pct(unbounded)} of {s['images']} images; images no minimal "
               f"attack broke: L2 {missed['L2']}, L∞ {missed['L∞']}; per attack: "
               + ", ".join(f"{a} {pct(v)}" for a, v in minimal.items()))
    out.append(line(PASS if unbounded >= 1 and not any(missed.values()) else FLAG, name,
                    "100% success at an unbounded budget", numbers))

    tol = _tolerance(s["images"])
    one, many = s["robust"]["one"], s["robust"]["many"]
    envelope = s["robust"].get("any attack", one)
    verdict = min(one, envelope)
    ok = many >= verdict - tol - ROUNDING
    if not ok:
        note = "; the restarts broke images every other attack missed (the verdict counts them)"
    elif many < one - tol - ROUNDING:
        note = "; PGD alone is not converged, but the other attacks found what the restarts found"
    else:
        note = ""
    out.append(line(PASS if ok else FLAG, name, "restarts do not change the verdict",
                    f"PGD-L∞ at ε = {s['eps_ref']:g} on {s['images']} images: robust accuracy {pct(one)} with 1 "
                    f"start, {pct(many)} with {s['restarts']} restarts, {pct(envelope)} under APGD and the minimal "
                    f"attacks combined (tolerance {pct(tol)}){note}"))

    free, label = s["robust"]["free"], {"square": "Square attack"}.get(s["gradient_free"], s["gradient_free"])
    out.append(line(PASS if free >= one - tol - ROUNDING else FLAG, name, "gradient-free does not beat gradient attacks",
                    f"{label} at ε = {s['eps_ref']:g}: robust accuracy {pct(free)} vs PGD {pct(one)} on "
                    f"{s['images']} images; {s['gradient_free_only']} images broken only by it "
                    f"(tolerance {pct(tol)})"))

    out.append(gradient_free_l2_line(name, s))
    out.append(_logits_line(name, m))
    return out + adaptive_lines(name, m)


def _logits_line(name: str, m: dict[str, Any]) -> dict[str, str]:
    out_kind = m["clean"]["output"]["kind"]
    return line(PASS if out_kind in ("logits", "log-probabilities") else FLAG, name,
                "outputs are logits (not probabilities)",
                f"output kind {out_kind}" + (" (logits up to a per-row shift: fine for attacks)"
                                             if out_kind == "log-probabilities" else ""))


def transfer_lines(transfer: dict[str, Any]) -> list[dict[str, str]]:
    """White-box ≥ transfer: each audited model's error on its own PGD examples is at least its error on any
    other model's (at the same ε)."""
    sources, matrix = transfer["sources"], transfer["matrix"]
    if len(sources) < 2:
        return [line(SKIP, sources[0] if sources else "-", "white-box ≥ transfer",
                     "one audited model only: no transferred examples to compare with")]
    out = []
    tol = 1 / 1000
    for target in sources:
        white = matrix[target][target]
        others = {s: matrix[s][target] for s in sources if s != target}
        worst = max(others, key=lambda s: others[s])
        ok = white + tol >= others[worst]
        out.append(line(PASS if ok else FLAG, target, "white-box ≥ transfer",
                        f"error on its own APGD-L∞ examples (ε = {transfer['eps_ref']:g}) {pct(white)}; "
                        f"highest transferred: {pct(others[worst])} from {worst}"))
    return out


def failed_checks(results: dict[str, Any], model: str) -> list[str]:
    """The checks a model FLAGged (its own and the transfer check where it is the target)."""
    return [s["check"] for s in results.get("sanity", []) if s["model"] == model and s["status"] == FLAG]


def sanity_lines(results: dict[str, Any]) -> list[dict[str, str]]:
    """Every check's line, per model in order, then the transfer checks."""
    out: list[dict[str, str]] = []
    for name, m in results["per_model"].items():
        out += model_lines(name, m)
    return out + transfer_lines(results["transfer"])


__all__ = ["evidence", "evidence_line", "sanity_lines", "failed_checks", "adaptive_lines", "model_lines", "gradient_free_l2_line", "transfer_lines",
           "check_monotone", "monotone_violations", "PASS", "FLAG", "SKIP"]
