"""The Szegedy et al. 2014 report as a pure function of results.json: tables with ours and the paper's numbers side by
side, verdicts computed from the numbers, figures referenced by paths relative to the run folder, the run's facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...report.document import Figure, Report, Section, Table, run_facts_section
from ...report.format import finite, num, pct, span
from ...report.reference import paper_value
from .sections import pool_report, spectral_report, units_report
from .tables import MAGNIFY_SIGMA


def _ours_paper(ours: float | None, paper: float | None, is_pct: bool = True) -> str:
    """"ours (paper)", or ours alone where the paper has no number."""
    o = pct(ours) if is_pct else num(ours)
    if paper is None:
        return o
    return f"{o} ({pct(paper) if is_pct else num(paper, '.3f')})"


def _pct_span(rates: list[float]) -> str:
    """The range of some rates as percentages: "5.0%–91.0%", or "2.0%" when they all round alike."""
    return span([100 * v for v in rates], ".1f") + "%"


# the report's names of the profile's parts (experiment.PARTS), for a run of some of them
PART_TITLES = {"tables": "Tables 1-3", "units": "§3", "spectral": "§4.3", "s42": "§4.2",
               "minimal": "\"How minimal is minimal?\""}


def build_report(results: dict[str, Any]) -> Report:
    """The whole report from results.json's content alone (so a committed report.md can be checked against it)."""
    t1, t2, t3 = results.get("table1"), results.get("table2"), results.get("table3")
    facts = results["facts"]
    intro = [
        "Reproduction of Szegedy et al., Intriguing properties of neural networks (ICLR 2014): Tables 1-3, "
        "§3 (units vs random directions), §4.2 (training on adversarial examples) and §4.3 (Lipschitz bounds), "
        f"on genuine MNIST. Profile: {facts['profile']} ({facts['profile_description']}); seed {facts['seed']}; "
        f"training data: {facts['training_data']}.",
        "Paper values are given in parentheses or in their own column; they come from the package's reference "
        "data file (several are from public write-ups of the paper, marked secondary there). Every number of ours "
        "is in results.json and recomputable from the saved models and adversarial sets under stages/.",
    ]
    parts = results.get("profile", {}).get("parts", list(PART_TITLES))
    if set(parts) != set(PART_TITLES):
        intro.append(f"This run covers {', '.join(PART_TITLES.get(k, k) for k in parts)} only (`--set parts="
                     f"{','.join(parts)}`); the profile's other parts were not run, and their sizes in results.json "
                     "describe what they would have run.")
    sections = [] if t1 is None else [
        _table1_section(t1), _transfer_section("Table 2 — cross-model generalisation", t2, "table2"),
        _transfer_section("Table 3 — cross-training-set generalisation", t3, "table3")]
    for key, rebuild in (("section3_units", units_report), ("section4_3_spectral", spectral_report),
                         ("section4_2_adversarial_training", pool_report)):
        if results.get(key) is not None:
            sections.append(rebuild(results[key]))
    if results.get("section_minimal") is not None:
        sections.append(_minimal_section(results["section_minimal"]))
    sections += ([_figures_section(results)] if results["attacks"] else []) + [_facts_section(results)]
    return Report("blindspots — Szegedy et al. 2014 reproduced", intro, sections)


def _table1_section(t1: dict[str, Any]) -> Section:
    rows = []
    for name, r in t1.items():
        p = lambda k, name=name: paper_value("szegedy2014", "table1", name, k)  # noqa: E731
        rows.append([name, pct(r["train_error"]), pct(p("train_error")), pct(r["test_error"]),
                     pct(p("test_error")), num(r["distortion"]), _certified(r.get("certified")),
                     num(p("distortion"), ".3f"), pct(r["success_rate"]), str(r["n_attacked"])])
    pairs = [(finite(r["distortion"]), paper_value("szegedy2014", "table1", n, "distortion")) for n, r in t1.items()]
    ratios = [o / p for o, p in pairs if p is not None and np.isfinite(o)]
    fc10 = [finite(t1[n]["distortion"]) for n in ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)") if n in t1]
    monotone = all(a < b for a, b in zip(fc10, fc10[1:]))
    all_success = min(r["success_rate"] for r in t1.values())
    verdict = (f"Every model has adversarial examples within a small distortion: the mean minimal RMS distortion "
               f"ranges over {span([r['distortion'] for r in t1.values()], '.4f')} with success rates of at least "
               f"{pct(all_success)}; our distortions are {num(float(np.median(ratios)) if ratios else None, '.2f')}× "
               f"the paper's (median ratio). Stronger weight decay on FC10 {'does' if monotone else 'does not'} raise "
               f"the distortion needed ({', '.join(num(d) for d in fc10)}), {'as' if monotone else 'unlike'} in the "
               "paper.")
    certs = [r["certified"] for r in t1.values() if (r.get("certified") or {}).get("supported")]
    if certs:
        verdict += (" Certified lower bound (CROWN): no perturbation of RMS below it changes the label, so the "
                    "minimal distortion lies between it and the L-BFGS figure; the certified radius is "
                    f"{span([c['certified_over_lbfgs'] for c in certs], '.2f')}× the L-BFGS distance (median per model)"
                    + ("" if all(c["violations"] == 0 for c in certs) else
                       " — FLAG: a certified radius exceeds an L-BFGS distance (a bound or attack bug)") + ".")
    header = ["model", "train err.", "paper", "test err.", "paper", "av. min. distortion", "certified lower bound",
              "paper", "attack success", "images attacked"]
    if not any("certified" in r for r in t1.values()):  # a run made before the certified column existed
        header.pop(6)
        rows = [row[:6] + row[7:] for row in rows]
    table = Table(header, rows,
                  "Table 1 — MNIST models", verdict, fmt="str")
    return Section("Table 1 — models and minimal distortion", [], [table])


def _certified(c: dict[str, Any] | None) -> str:
    """Table 1's certified column: the mean certified RMS radius, or '—' (not computed, or not boundable)."""
    return num(c["mean_certified_rms"]) if c and c.get("supported") else "—"


def _minimal_section(m: dict[str, Any]) -> Section:
    """'How minimal is minimal?': exact minimal L∞ (L1, L2) per net, and each attack's distance over it."""
    tables, paragraphs = [], []
    sizes = m["sizes"]
    for name, net in m["nets"].items():
        for norm, label in (("linf", "L∞"), ("l1", "L1"), ("l2", "L2")):
            rec = net.get(norm)
            if rec is None:
                continue
            ex = rec["exact"]
            statuses = ", ".join(f"{s} {c}" for s, c in ex["statuses"].items())
            paragraphs.append(
                f"{name} (test error {pct(net['test_error'])}), {rec['images']} test images, exact minimal {label}: "
                f"median {num(ex['median'])} ({statuses}; solve time median {num(ex['solve_seconds_median'], '.3g')} "
                f"s, max {num(ex['solve_seconds_max'], '.3g')} s); CROWN certified radius median "
                f"{num(rec['certified_median'])}." + (
                    "" if not ex.get("proven_bounds_median") else
                    f" Over all {rec['images']} images, the solver's proven bounds (lower, upper) have medians "
                    f"{num(ex['proven_bounds_median'][0])} and {num(ex['proven_bounds_median'][1])}."))
            rows = [[a, f"{g['found']}/{rec['images']}", num(g["median_distance"]),
                     "—" if g["median_ratio"] is None else f"{g['median_ratio']:.3f}",
                     "—" if g["worst_ratio"] is None else f"{g['worst_ratio']:.3f}"] for a, g in rec["attacks"].items()]
            tables.append(Table(["attack", "found", f"median {label}", "median ratio to exact", "worst ratio"], rows,
                                f"{name}: each attack's {label} distortion over the exact minimum", fmt="str"))
    return Section("How minimal is minimal?", [
        "Every attack's distortion is an upper bound of the smallest adversarial perturbation. On small ReLU nets "
        "trained here the exact minimum is computable (a mixed-integer program, HiGHS, started from the closest "
        "attack example; L2 by SCIP): the ratio of each attack's distance to it says how far from minimal the "
        "'minimal' examples are. Every attack is measured in each norm by the distance of the example it found (the "
        "L2 attacks L-BFGS, minimal-L2, DeepFool and C&W in L∞ too, the L∞ ones in L2). Time limit "
        f"{sizes['time_limit']:g} s per image" + (f" ({sizes['l2_time_limit']:g} s for L2)" if sizes.get("l2_images")
                                                  else "") +
        "; an image past it is not compared.", *paragraphs], tables)


def _transfer_section(title: str, t: dict[str, Any], key: str) -> Section:
    cols = t["columns"]
    rows = []
    for name, r in list(t["rows"].items()) + list(t["matched_noise"].items()):
        paper_row = r.get("paper_row")
        cells: list[Any] = [name]
        for c in cols:
            paper = paper_value("szegedy2014", key, paper_row, c) if paper_row else None
            cells.append(_ours_paper(r["errors"][c], paper))
        cells.append(num(r["distortion"]))
        rows.append(cells)
    adv_rows = {n: r for n, r in t["rows"].items() if r["kind"] == "adversarial"}
    beats, total = 0, 0
    for name, r in adv_rows.items():
        noise = t["matched_noise"].get(f"matched noise for {name}")
        if noise is None:
            continue
        for c in cols:
            if c != name:
                total += 1
                beats += r["errors"][c] > noise["errors"][c]
    sentences = [f"Adversarial examples transfer better than Gaussian noise of the same realised distortion in "
                 f"{beats} of {total} off-diagonal cells."]
    off = [r["errors"][c] for n, r in adv_rows.items() for c in cols if c != n]
    if off:
        sentences.append(f"Off-diagonal transfer error ranges over {_pct_span(off)} (mean "
                         f"{pct(float(np.mean(off)))}).")
    gauss = {n: r for n, r in t["rows"].items() if r["kind"] == "gaussian"}
    for clipped, reading in ((False, "the paper's reading, unclipped (RMS distortion σ)"),
                             (True, "clipped to [0, 1] (RMS below σ)")):
        errs = [r["errors"][c] for r in gauss.values() if bool(r["clipped"]) == clipped for c in cols]
        if errs:
            sentences.append(f"Gaussian noise, {reading}: errors {_pct_span(errs)}.")
    mag = {n: r for n, r in t["rows"].items() if r["kind"] == "magnified"}
    if mag:
        gains = [r["errors"][c] - t["rows"][r["source"]]["errors"][c]
                 for r in mag.values() for c in cols if c != r["source"]]
        sentences.append(f"Magnifying the perturbations to per-pixel RMS {MAGNIFY_SIGMA} raises off-diagonal error "
                         f"by {pct(float(np.mean(gains)))} on average (the paper: to 43–98%).")
    unclipped = [r for r in gauss.values() if not r["clipped"]]
    paragraphs = []
    if unclipped:
        outside = ", ".join(f"σ = {num(r['sigma'], 'g')}: {pct(r['outside_box'])} of pixels" for r in unclipped)
        paragraphs.append(
            "Gaussian controls in two readings, on one seeded N(0, σ²) draw added to the clean images attacked for "
            f"{unclipped[0]['images_of']} and fed to every model: 'unclipped' is the paper's reading (its distortion "
            "column gives exactly σ, which clipped noise cannot produce), and such inputs leave the [0, 1] box "
            f"({outside} fall outside it); 'clipped' keeps them in the box, which shrinks the realised RMS below σ. "
            "The paper's numbers sit beside the unclipped rows. 'Matched noise' rows are clipped noise with the "
            "realised RMS of each adversarial row.")
    table = Table(["set ↓ / fed to →", *cols, "distortion"], rows,
                  f"{title}: error of each column model on each row's set — ours (paper)", " ".join(sentences),
                  fmt="str")
    return Section(title, paragraphs, [table])


def _figures_section(results: dict[str, Any]) -> Section:
    figures = []
    for name, a in results["attacks"].items():
        figures.append(Figure(Path(a["figures"]["examples"]), f"{name}: original | perturbation (magnified around "
                                                               "grey) | adversarial, with true → predicted labels"))
        figures.append(Figure(Path(a["figures"]["distortion"]), f"{name}: distribution of minimal RMS distortions"))
    return Section("Figures — examples and distortion histograms", [], [], figures)


def _facts_section(results: dict[str, Any]) -> Section:
    clean = ", ".join(f"{k}: {v['clean_errors_skipped']}" for k, v in results["attacks"].items())
    return run_facts_section(results, [f"clean errors skipped before reaching the attacked images, per model: {clean}"]
                             if clean else [])


def terminal_summary(results: dict[str, Any]) -> str:
    """A compact text table for the end of a run: Table 1, ours (paper)."""
    lines = [f"{'model':<14} {'test err':>16} {'av. min. distortion':>22} {'success':>8}"] if results.get("table1") else []
    for name, r in (results.get("table1") or {}).items():
        pt = paper_value("szegedy2014", "table1", name, "test_error")
        pd = paper_value("szegedy2014", "table1", name, "distortion")
        lines.append(f"{name:<14} {_ours_paper(r['test_error'], pt):>16} "
                     f"{_ours_paper(r['distortion'], pd, is_pct=False):>22} {pct(r['success_rate']):>8}")
    lines.append("wall time: " + ", ".join(f"{k} {num(v, '.0f')} s" for k, v in results["wall_time_s"].items()))
    return "\n".join(lines)
