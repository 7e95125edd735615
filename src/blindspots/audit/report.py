"""The audit report, a pure function of results.json (`build_report`), written as report.md and a self-contained
report.html with its figures (`write_all`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report.document import Figure, Report, Section, Table, run_facts_section, write_report
from ..report.format import num, pct
from .figures import draw_figures, figure_paths
from .sanity import evidence

NORM_LABEL = {"minimal_l2": "L2", "minimal_linf": "L∞", "l2": "L2", "linf": "L∞"}


def _n(v: Any, spec: str = ".4g") -> str:
    return "∞" if v == "inf" else num(v, spec)


def _median(stats: dict[str, Any]) -> str:
    """The median smallest perturbation, or why there is none."""
    if not stats["n"]:
        return "n/a (no correctly classified image)"
    if stats["failed"] == stats["n"]:
        return "none found"
    median = stats["median"]
    if median is None or median == "inf" or (isinstance(median, float) and median == float("inf")):
        return f"none found on {stats['failed']} of {stats['n']} images (over half)"
    return _n(median)


def headline(results: dict[str, Any], name: str) -> str:
    """One model's verdict: robust accuracy under every attack the audit ran, or "not trustworthy: <checks>" with
    that number as an upper bound only, when any sanity check FLAGged the model."""
    from .sanity import failed_checks

    m = results["per_model"][name]
    eps = results["config"]["eps_ref"]
    v = m["verdict"]["linf"]
    k = v["eps"].index(eps)
    curve = ", ".join(f"ε {e:g}: {pct(r)}" for e, r in zip(v["eps"], v["robust"]))
    flags = failed_checks(results, name)
    alone = m["curves"].get("adaptive", {}).get("gradient_free")
    if flags:
        reason = f"audited by gradient-free attacks alone ({alone}); " if alone else ""
        return (f"{name}: not trustworthy: {reason}failed checks: {'; '.join(flags)}. Clean accuracy {pct(m['clean']['accuracy'])}; robust "
                f"accuracy at L∞ ε = {eps:g} at most {pct(v['robust'][k])} (an upper bound: the attacks found at "
                f"least this many adversarial examples, the flagged checks say they may have missed more; L∞ {curve}; "
                f"evidence: {evidence(m)}).")
    return (f"{name}: clean accuracy {pct(m['clean']['accuracy'])}; robust accuracy at L∞ ε = {eps:g} "
            f"{pct(v['robust'][k])} under every attack the audit ran, each example re-verified (L∞ {curve}; "
            f"evidence: {evidence(m)}).")


def _summary(results: dict[str, Any]) -> list[str]:
    out = []
    for name, m in results["per_model"].items():
        l2, li = m["minimal_l2"]["best"]["stats"], m["minimal_linf"]["best"]["stats"]
        out.append(f"{headline(results, name)} Median smallest adversarial perturbation L2 {_median(l2)}, "
                   f"L∞ {_median(li)}.")
    for name, f in results.get("failed", {}).items():
        out.append(f"{name}: not audited: the {f['stage']} stage failed ({f['error']}); the other models' audits "
                   "went on without it.")
    if results["config"].get("fast"):
        out.append("--fast: " + results["facts"]["choices"]["sanity_runs"] + "; L-BFGS and the PGD bisection on the "
                   "first images only (the tables give each attack's image count).")
    flags = [s["line"] for s in results["sanity"] if s["status"] == "FLAG"]
    out.append(f"Sanity checks: {len(results['sanity']) - len(flags)} of {len(results['sanity'])} pass or do not "
               "apply" + (f"; FLAGGED: {' | '.join(flags)}" if flags else "; none flagged."))
    return out


def _clean(results: dict[str, Any]) -> Section:
    rows = []
    for d in results["models"]:
        if d["name"] not in results["per_model"]:
            continue
        c = results["per_model"][d["name"]]["clean"]
        rows.append([d["name"], d["source"], pct(c["accuracy"]), str(c["errors"]), c["output"]["kind"],
                     f"{d['parameters']:,}", f"{d['macs_per_image']:,}"])
    return Section("Clean accuracy and outputs", [
        f"On the {results['data']['n']} images of {results['data']['name']}. Output kind: 'logits', or "
        "'log-probabilities' (logits up to a per-row shift); probability outputs are attacked through their "
        "logarithm (and FLAGged), a tuple or dict output through its first tensor."]
        + [f"{d['name']}: {note}." for d in results["models"] for note in d.get("outputs_adapted", [])],
        [Table(["model", "source", "accuracy", "errors", "output", "parameters", "multiply-adds / image"], rows,
               fmt="str")])


def _minimal(results: dict[str, Any]) -> Section:
    tables, figures = [], []
    for name, m in results["per_model"].items():
        for key in ("minimal_l2", "minimal_linf"):
            rec, rows = m[key], []
            for attack, a in rec["attacks"].items():
                s = a["stats"]
                rows.append([attack, str(a["images"]), pct(a["success_rate"]), _n(s["q1"]), _n(s["median"]),
                             _n(s["q3"]), _n(s["mean"]), str(s["failed"])])
            s = rec["best"]["stats"]
            rows.append(["per-image best", str(s["n"]), "", _n(s["q1"]), _n(s["median"]), _n(s["q3"]),
                         _n(s["mean"]), str(s["failed"])])
            skipped = "; ".join(f"{a}: {why}" for a, why in rec["skipped"].items())
            note = " ".join(([f"Skipped: {skipped}."] if skipped else [])
                            + ([f"hopskipjump (decision-based): {rec['decision_based']}."]
                               if rec.get("decision_based") else []))
            tables.append(Table(["attack", "images", "success", "q1", "median", "q3", "mean (found)", "failed"],
                                rows, f"{name}: minimal {NORM_LABEL[key]} perturbation", note, fmt="str"))
        figures.append(Figure(figure_paths(name)["minimal"],
                              f"{name}: smallest adversarial L2 and L∞ perturbation per image"))
    return Section("Minimal perturbations", [
        "The smallest perturbation each attack needed to change the label, per image, over the correctly classified "
        "images it ran on ('images'; a failure counts as ∞; the per-image best is the smallest over the attacks that "
        "ran on the image). Quartiles are of the per-image values. hopskipjump (Chen et al. 2020) reads only the "
        "model's top-1 label: where the gradient probe finds the input gradients unusable it runs on every image, "
        "else on the first images as a check on the gradient attacks."], tables, figures)


def _curves(results: dict[str, Any]) -> Section:
    tables, figures = [], []
    for name, m in results["per_model"].items():
        for norm in ("linf", "l2"):
            c, v = m["curves"][norm], m["verdict"][norm]
            if "draws" in v:  # a random model: each line an expectation over the draws, as the verdict
                rows = [[f"{line} (expected)"] + [pct(r) for r in values] for line, values in v["lines"].items()]
                rows.append([f"every attack (verdict, expectation over {v['draws']} draws ± sd)"] +
                            [f"{pct(r)} ± {pct(sd)}" for r, sd in zip(v["robust"], v["spread"])])
            else:
                rows = [[line] + [pct(r) for r in values] for line, values in c["lines"].items()]
                rows.append(["every attack (verdict)"] + [pct(r) for r in v["robust"]])
            note = f"Evidence: {evidence(m)}." + (f" Gradient attacks not run: {c['skipped']}." if c.get("skipped")
                                                  else "")
            tables.append(Table(["attack"] + [f"ε = {e:g}" for e in c["eps"]], rows,
                                f"{name}: robust accuracy under {NORM_LABEL[norm]} attacks", note, fmt="str"))
            src = [[s, str(rec["images"])] + [f"{b} ({o} alone)" for b, o in zip(rec["broke"], rec["only"])]
                   for s, rec in v["sources"].items()]
            tables.append(Table(["source", "images"] + [f"ε = {e:g}" for e in v["eps"]], src,
                                f"{name}: images each attack broke in {NORM_LABEL[norm]} (re-verified), and broke "
                                "alone", fmt="str"))
        figures.append(Figure(figure_paths(name)["curves"], f"{name}: robust accuracy against ε"))
    steps = next(iter(results["per_model"].values()), {}).get("curves", {}).get("apgd_steps", 0)
    return Section("Robust accuracy against ε", [
        f"Share of images still classified correctly under attack. APGD: {steps} steps each of APGD-CE, APGD-DLR "
        "and targeted APGD-DLR, ascending ε, each image attacked until broken (through straight-through gradients "
        "where the gradient probe found masking). '(clipped)': the minimal attack's example projected onto the "
        "ε-ball (a line of an attack run on some of the images, 'on k images', is over those images). 'every attack "
        "(verdict)': broken by at least one example of any attack the audit ran — APGD, the minimal attacks, "
        "independent PGD, restarts, Square (L∞ at the reference ε, L2 at each ε on the images the gradient L2 "
        "attacks left robust), the other models' transferred examples — each projected onto the "
        "ε-ball and re-checked by a fresh forward pass; the second table counts what each source broke."],
        tables, figures)


def _transfer(results: dict[str, Any]) -> Section:
    t = results["transfer"]
    rows = [[src] + [pct(t["matrix"][src][tgt]) for tgt in t["targets"]] for src in t["sources"]]
    rows.append(["(clean images)"] + [pct(t["clean_error"][tgt]) for tgt in t["targets"]])
    paragraphs = [f"Error of each column model on each row model's APGD-L∞ examples at ε = {t['eps_ref']:g} (all "
                  "images); the diagonal is white-box; the last row is the error on the clean images."]
    if t.get("zoo_skipped"):
        paragraphs.append(f"--zoo skipped: {t['zoo_skipped']}.")
    return Section("Transfer", paragraphs,
                   [Table(["examples from \\ error of"] + t["targets"], rows, fmt="str")])


def _lipschitz(results: dict[str, Any]) -> Section:
    tables, paragraphs = [], []
    for name, m in results["per_model"].items():
        lp = m.get("lipschitz")
        if lp is None:  # the check was not in the run's CHECKS
            continue
        if not lp["supported"]:
            paragraphs.append(f"{name}: no Lipschitz bound: {lp['reason']}")
            continue
        rows = [[r["name"], r["kind"], _n(r["bound"]) + ("" if r["exact"] else "*"), r["method"]] for r in lp["layers"]]
        rows.append(["product", "", _n(lp["product"]), "upper bound on the whole net's ℓ2 Lipschitz constant"])
        s, ratio = lp["radius"]["stats"], lp["found_over_certified"]
        ok = lp["violations"] == 0
        verdict = (f"Certified L2 radius margin / (√2·L): median {_n(s['median'])} (q1 {_n(s['q1'])}, q3 "
                   f"{_n(s['q3'])}); {'PASS' if ok else 'FLAG'}: certified ≤ smallest adversarial L2 found on all "
                   f"{lp['checked']} images checked" + ("" if ok else f" except {lp['violations']} (first: image "
                                                        f"{lp['first_violation']}) — a bound or attack bug") +
                   f"; found / certified: median {_n(ratio['median'])}.")
        tables.append(Table(["layer", "kind", "bound", "method"], rows, f"{name}: per-layer ℓ2 Lipschitz bounds "
                            "(* an upper bound, not exact)", verdict, fmt="str"))
    return Section("Lipschitz bounds and certified radii", paragraphs, tables)


def _units(results: dict[str, Any]) -> Section:
    rows, paragraphs = [], []
    for name, m in results["per_model"].items():
        u = m.get("units")
        if u is None:  # the check was not in the run's CHECKS
            continue
        if "skipped" in u:
            paragraphs.append(f"{name}: skipped: {u['skipped']}")
            continue
        s, t = u["summary"], u["tests"]
        for measure in ("purity", "coherence"):
            rows.append([name, f"{u['layer']} ({u['width']})", measure, num(s[measure]["units"]["mean"], ".3f"),
                         num(s[measure]["random"]["mean"], ".3f"), num(u["chance"][measure]["mean"], ".3f"),
                         num(t[measure]["mannwhitney_p"], ".3g")])
        paragraphs.append(u["verdict"])
    table = Table(["model", "layer (width)", "measure", "single units", "random directions", "chance",
                   "Mann–Whitney p"], rows, "Top-k images of single units vs random directions", fmt="str")
    return Section("Single units vs random directions (Szegedy et al. §3)", paragraphs, [table] if rows else [])


def _ratio(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _bounds(results: dict[str, Any]) -> Section:
    """Robust accuracy bracketed [certified, attacked] per ε; the exact minimal L∞ and each attack's gap to it."""
    tables, paragraphs, figures = [], [], []
    for name, m in results["per_model"].items():
        b = m.get("bounds")
        if b is None:
            continue
        if not b["supported"]:
            paragraphs.append(f"{name}: no certified bound: {b['reason']}")
            continue
        method = {"crown": "CROWN", "ibp": "IBP", "alpha-crown": "α-CROWN"}[b["method"]]
        for norm in ("linf", "l2"):
            r = b[norm]
            ok = all(c <= a + 1e-12 for c, a in zip(r["certified"], r["attacked"]))
            rows = [[f"{e:g}", pct(c), pct(a), f"[{pct(c)}, {pct(a)}]"]
                    for e, c, a in zip(r["eps"], r["certified"], r["attacked"])]
            tables.append(Table(["ε", f"certified ({method})", "attacked (verdict)", "true robust accuracy in"], rows,
                                f"{name}: robust accuracy under {NORM_LABEL[norm]} perturbations, bracketed",
                                f"{'PASS' if ok else 'FLAG'}: certified ≤ attacked at every ε"
                                + ("" if ok else " — a bound or attack bug") + f" ({b['why']}).", fmt="str"))
        x = b["exact"]
        line = (f"{name}: certified L∞ radius ({method}) on the first {x['images']} images: median "
                f"{_n(_median_of(x['radius'], x['correct']))}; best attack median "
                f"{_n(_median_of(x['best_attack'], x['correct']))}.")
        if "skipped" in x:
            paragraphs.append(line + f" Exact minimum not computed: {x['skipped']}.")
            continue
        counts = ", ".join(f"{s} {c}" for s, c in x["statuses"].items())
        solve = x.get("solve_time")
        paragraphs.append(
            line + f" Exact minimal L∞ (MILP, HiGHS) within a budget of {x['max_unstable']} unstable units "
            f"(counted by {x.get('unstable_method', 'crown').upper()}) and "
            f"{x['time_limit']:g} s per image: {counts}" + (f"; solve time median {_n(solve['median'], '.3g')} s, "
                                                            f"max {_n(solve['max'], '.3g')} s" if solve else "")
            + f". {'PASS' if x['violations'] == 0 else 'FLAG'}: certified radius ≤ exact ≤ best attack on all "
            f"{x['checked']} images with an exact value" + ("" if x["violations"] == 0 else
                                                          f" except {x['violations']} — a bound or solver bug")
            + (f" (first: {next(f for f in x['flags'] if f)})" if any(x.get("flags", [])) else "")
            + (f"; {x['checked_without_cut']} images re-solved without the radius cut" if x.get("checked_without_cut")
               else "") + ".")
        rows = [[a, str(g["images"]), _ratio(g["median"]), _ratio(g["worst"])] for a, g in x["gap"].items()]
        tables.append(Table(["attack", "images", "median L∞ / exact", "worst"], rows,
                            f"{name}: each L∞ attack's distortion over the exact minimum", fmt="str"))
        figures.append(Figure(figure_paths(name)["bounds"], f"{name}: per image, certified radius, exact minimal L∞ "
                                                            "and the best attack"))
    return Section("Certified bounds and exact minimal perturbations", [
        "Certified robust accuracy (blindspots.verify: every input in the ε-ball ∩ box provably keeps its label) is a "
        "lower bound of the true robust accuracy, the verdict's attacked robust accuracy an upper bound; the true "
        "value lies in between. On small piecewise-linear models the exact minimal L∞ perturbation (a mixed-integer "
        "program) shows how far each attack is from the minimum.", *paragraphs], tables, figures)


def _median_of(values: list[Any], correct: list[Any]) -> float | None:
    import numpy as np

    from .common import from_list

    v = from_list(values)[from_list(correct) > 0]
    return float(np.median(v)) if v.size else None


def _sanity(results: dict[str, Any]) -> Section:
    return Section("Sanity checks", [s["line"] for s in results["sanity"]])


def build_report(results: dict[str, Any]) -> Report:
    """The report, from results.json's content alone (the same results give the same report)."""
    d = results["data"]
    intro = [f"Adversarial robustness audit of {', '.join(m['name'] for m in results['models'])} on {d['n']} images "
             f"of {d['name']} (bounds {d['bounds']}).", *_summary(results)]
    sections = [_clean(results), _minimal(results), _curves(results), _bounds(results), _transfer(results),
                _lipschitz(results), _units(results), _sanity(results), run_facts_section(results)]
    sections[-1].title = "Run facts"
    return Report("blindspots audit", intro, sections)


def write_all(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Figures, report.md and report.html under `out`, from results alone."""
    draw_figures(results, out)
    return write_report(build_report(results), out)


__all__ = ["build_report", "write_all"]
