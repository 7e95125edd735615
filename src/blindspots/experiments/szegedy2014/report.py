"""The Szegedy et al. 2014 report as a pure function of results.json: tables with ours and the paper's numbers side by
side, verdicts computed from the numbers, figures referenced by paths relative to the run folder, the run's facts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ...analysis.units import ALPHA, MEASURES

from ...report.document import Figure, Report, Section, Table, run_facts_section
from ...report.format import finite, num, pct, plus_minus, span
from ...report.reference import paper_value, published
from .common import ALEXNET_LAYERS, ARM_TITLES, PLAIN, POOLED
from .findings import curve_verdict
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
    header = f"{'model':<14} {'test err':>16} {'av. min. distortion':>22} {'success':>8}"
    lines = [header] if results.get("table1") else []
    for name, r in (results.get("table1") or {}).items():
        pt = paper_value("szegedy2014", "table1", name, "test_error")
        pd = paper_value("szegedy2014", "table1", name, "distortion")
        lines.append(f"{name:<14} {_ours_paper(r['test_error'], pt):>16} "
                     f"{_ours_paper(r['distortion'], pd, is_pct=False):>22} {pct(r['success_rate']):>8}")
    lines.append("wall time: " + ", ".join(f"{k} {num(v, '.0f')} s" for k, v in results["wall_time_s"].items()))
    return "\n".join(lines)


def verdict_sentence(name: str, v: Mapping[str, Any]) -> str:
    """One sentence from `curve_verdict`'s numbers (a pure function of them)."""
    ci = ("n/a with one seed" if v["ci_low"] is None or not math.isfinite(float(v["ci_low"]))
          else f"95% CI {100 * v['ci_low']:+.2f} to {100 * v['ci_high']:+.2f} points")
    ends = "ends below" if v["final_diff"] < 0 else "does not end below"
    since = ("it stays below from epoch " + str(v["below_since_epoch"]) + " on" if v["below_since_epoch"] is not None
             else "its mean curve is not below the plain one at the end")
    return (f"{name}: the pool-trained net {ends} weight decay alone in clean test error ({pct(v['final_pool'], 2)} vs "
            f"{pct(v['final_plain'], 2)}, difference {100 * v['final_diff']:+.2f} points, {ci}; lower on "
            f"{v['seeds_below']} of {v['seeds']} seed(s)); {since}.")


def units_report(results: dict[str, Any]) -> Section:
    """The §3 Section from `units_section`'s results (e.g. read back from results.json)."""
    records = results["layers"]
    n_images = next(iter(records.values()))["n_images"]
    figures = [Figure(Path(r["figure"]), f"{name}: left, top-8 test images of single units (Figure 1); right, of "
                                         "random directions (Figure 2); the first 8 of each kind in seeded order")
               for name, r in records.items()]
    rows = []
    for name, r in records.items():
        s, t = r["summary"], r["tests"]
        rows.append([name, str(r["width"]), _pm(s["purity"]["units"]), _pm(s["purity"]["random"]),
                     num(t["purity"]["mannwhitney_p"], ".3g"), _pm(s["coherence"]["units"]), _pm(s["coherence"]["random"]),
                     num(t["coherence"]["mannwhitney_p"], ".3g"), num(r["chance"]["purity"]["mean"], ".3f"),
                     "yes" if r["told_apart"] else "no"])
    apart = [n for n, r in records.items() if r["told_apart"]]
    above = [n for n, r in records.items()
             if all(r["summary"][m][kind]["mean"] > r["chance"][m]["p95"] for m in ("purity", "coherence")
                    for kind in ("units", "random"))]
    differences = []  # which measure told them apart in which layer, and which kind scored higher
    for n in apart:
        r = records[n]
        for m, label in (("purity", "label purity"), ("coherence", "pixel coherence")):
            if r["tests"][m]["mannwhitney_p"] < ALPHA / len(MEASURES):
                kind = "units" if r["summary"][m]["units"]["mean"] > r["summary"][m]["random"]["mean"] else "random"
                differences.append(f"{n}: {label}, {kind} higher")
    verdict = (f"Both kinds of direction pick out images far more alike than chance in {len(above)} of {len(records)} "
               f"layers (mean label purity and pixel coherence of units and of random directions above the 95th "
               f"percentile of random 8-image sets). Single units and random directions can be told apart "
               f"(Mann–Whitney, α = {ALPHA:g} Bonferroni over {len(MEASURES)} measures) in {len(apart)} of "
               f"{len(records)} layers"
               + (f" ({'; '.join(differences)})" if apart else "")
               + ". " + ("So here, as the paper found, the semantics live in the space rather than in single units."
                         if not apart else "So here single units are NOT interchangeable with random directions in "
                                           "every layer, a partial departure from the paper's qualitative claim."))
    table = Table(["model, layer", "width", "purity: units", "purity: random", "p", "coherence: units",
                   "coherence: random", "p", "purity: chance", "told apart"], rows,
                  f"§3 — top-8 images of single units vs random directions, over {n_images} test images "
                  "(mean ± std over directions; p: two-sided Mann–Whitney)", verdict, fmt="str")
    paragraphs = [
        "Szegedy et al. compare the test images that maximise one unit's activation with those that maximise a random "
        "direction in the same layer and find both semantically coherent; the paper shows pictures only. Here the "
        "coherence is measured: label purity (share of the most common true label among the top 8) and pixel "
        "coherence (mean pairwise cosine similarity of the 8 images), with a two-sided Mann–Whitney test between "
        "units and random directions. Per-layer sentences: " + " ".join(r["verdict"] for r in records.values()),
    ]
    return Section("§3 — units of φ(x): single units vs random directions", paragraphs, [table], figures)


def _pm(d: dict[str, float]) -> str:
    """A summary's mean ± std over directions."""
    return plus_minus(d["mean"], d["std"], ".3f")


def _alexnet_table() -> Table:
    values = [paper_value("szegedy2014", "table5", layer) for layer in ALEXNET_LAYERS]
    known = [v for v in values if v is not None]
    rows: list[list[Any]] = [[layer, num(v, "g")] for layer, v in zip(ALEXNET_LAYERS, values)]
    rows.append(["product", num(math.prod(known), ".4g")])
    note = published()["szegedy2014"]["table5"].get("_note", "")
    return Table(["layer", "upper bound"], rows,
                 f"Reference only — the paper's Table 5 for ImageNet AlexNet, a DIFFERENT model ({note}); "
                 "ReLU, max-pooling and contrast normalisation layers not listed", fmt="str")


def spectral_report(results: dict[str, Any]) -> Section:
    """The §4.3 Section from `spectral_section`'s results."""
    records = results["models"]
    tables = []
    for spec, r in records.items():
        rows = []
        for b in r["layers"]:
            shapes = f"{'×'.join(map(str, b['input_shape']))} → {'×'.join(map(str, b['output_shape']))}"
            rows.append([b["name"], b["kind"], shapes, num(b["bound"], ".4g") + ("" if b["exact"] else " *"),
                         num(b["lower"], ".4g"), b["method"]])
        rows.append(["product", "", "", num(r["product"], ".4g"), "", "upper bound on ‖f(x+r) − f(x)‖ / ‖r‖"])
        exact = all(b["exact"] for b in r["layers"])
        tables.append(Table(["layer", "kind", "in → out", "upper bound", "power iteration", "method"], rows,
                            f"Table 5 for our {spec} (test error {pct(r['test_error'], 2)})"
                            + ("" if exact else "; * an upper bound, not the layer's exact constant"), fmt="str"))
    rows = []
    for spec, r in records.items():
        c = r["check"]
        rows.append([spec, num(r["product"], ".4g"), num(c["ratio_max"], ".4g"), num(c["ratio_median"], ".4g"),
                     num(c["local_jacobian_max"], ".4g"), num(c["looseness_vs_ratio"], ".3g") + "×",
                     num(c["certified_radius_median"], ".3g"), num(c["adv_l2_median"], ".3g"),
                     num(c["adv_over_certified_min"], ".3g") + "×",
                     f"{c['pairs']} ({r['pairs_source']})", "yes" if c["holds"] else "NO"])
    checks = [r["check"] for r in records.values()]
    fails = [s for s, r in records.items() if not r["check"]["holds"]]
    loose = [c["looseness_vs_ratio"] for c in checks]
    gaps = [c["adv_over_certified_min"] for c in checks if c["adv_over_certified_min"] is not None]
    verdict = (("The product bound holds on every pair of every model (and at every clean image's local Jacobian)"
                if not fails else
                f"The product bound FAILS on {', '.join(fails)} (a bug: it must hold)")
               + f" ({sum(c['pairs'] for c in checks)} pairs). It is loose: {span(loose, '.3g')}× the "
               "largest ratio ‖f(x_adv) − f(x)‖/‖r‖ seen on the adversarial pairs")
    if gaps:
        verdict += (f", and the adversarial examples lie {num(min(gaps), '.3g')}× or more beyond the radius the bound "
                    "certifies around their clean image, margin/(√2·L)")
    verdict += (". As in the paper, a large product does not by itself prove adversarial examples exist, and these "
                "bounds are too loose to certify robustness at the distortions the attacks need.")
    summary = Table(["model", "∏ bound L", "max ratio", "median ratio", "max ‖J_f(x)‖", "L / max ratio",
                     "median certified radius", "median adv. ‖r‖₂", "min adv. ‖r‖ / certified", "pairs", "holds"],
                    rows, "§4.3 — the product bound checked on adversarial pairs (ℓ2, on the logits)", verdict,
                    fmt="str")
    paragraphs = [
        "Per-layer upper Lipschitz bounds in ℓ2 (Szegedy et al. §4.3): σ_max(W) for fully connected layers, the "
        "DFT bound of each convolution on the zero-padded grid (verified above by power iteration on the real "
        "layer: the true norm lies between the two columns), 1 for ReLU and non-overlapping max pooling, 1/4 for "
        "the sigmoid. The product bounds how much the logits can move per unit of input change; it is checked "
        "against each model's own minimal adversarial pairs and the local Jacobian norm at their clean images.",
    ]
    return Section("§4.3 — upper Lipschitz bounds per layer (Table 5)", paragraphs,
                   [summary, *tables, _alexnet_table()])


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% t interval over seeds (NaN for fewer than two)."""
    v = np.asarray([finite(x) for x in values], dtype=float)
    if v.size < 2:
        return float(v.mean()) if v.size else float("nan"), float("nan")
    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def _points(v: float) -> str:
    return "n/a" if not math.isfinite(finite(v)) else f"{100 * v:+.2f}"


def pool_report(results: Mapping[str, Any]) -> Section:
    """The §4.2 Section from `adversarial_training_section`'s results (also after a JSON round trip)."""
    runs, arms = results["seeds"], results["arms"]
    paper = {PLAIN: paper_value("szegedy2014", "section4_2", "weight_decay_only_test_error"),
             POOLED: paper_value("szegedy2014", "section4_2", "adversarial_training_test_error_below")}

    def per_seed(arm: str, get: Any) -> list[float]:
        return [finite(get(run, run["arms"][arm])) for run in runs.values()]

    plain_wall = per_seed(PLAIN, lambda run, r: r["wall_time_s"])
    rows, summary = [], {}
    for arm in arms:
        err = per_seed(arm, lambda run, r: r["test_error"])
        diff = [e - p for e, p in zip(err, per_seed(PLAIN, lambda run, r: r["test_error"]))]
        d_mean, d_half = _mean_ci(diff)
        dist = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["per_arm"][a]["mean_distortion"])
        ratio = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["per_arm"][a]["mean_ratio_to_plain"])
        fgsm_err = per_seed(arm, lambda run, r: r["curve"]["fgsm_error"][-1])
        wall = per_seed(arm, lambda run, r: r["wall_time_s"])
        attack = per_seed(arm, lambda run, r: r["attack_seconds"])
        p_values = per_seed(arm, lambda run, r, a=arm: run["evaluation"]["mcnemar"][a]["p"])
        summary[arm] = (d_mean, d_half, p_values)
        ref = paper.get(arm)
        seeds_text = span([100 * e for e in err], ".2f") + "%" if len(err) > 1 else "—"
        rows.append([ARM_TITLES[arm], pct(float(np.mean(err)), 2), seeds_text,
                     "—" if ref is None else ("< " if arm == POOLED else "") + pct(ref, 1),
                     "—" if arm == PLAIN else (_points(d_mean) + ("" if not math.isfinite(d_half)
                                                                  else f" ± {100 * d_half:.2f}")),
                     "—" if arm == PLAIN else span(p_values, ".3g"), pct(float(np.mean(fgsm_err)), 1),
                     num(float(np.nanmean(dist)) if any(map(math.isfinite, dist)) else None, ".4f"),
                     "—" if arm == PLAIN else span(ratio, ".2f") + "×", num(float(np.mean(wall)), ".0f"),
                     f"{np.mean(wall) / np.mean(plain_wall):.1f}×",
                     "—" if arm == PLAIN else pct(float(np.sum(attack) / np.sum(wall)), 0)])
    n_seeds = len(runs)
    better = [ARM_TITLES[a] for a in arms if a != PLAIN and summary[a][0] < 0]
    sure = [ARM_TITLES[a] for a in arms if a != PLAIN and math.isfinite(summary[a][1])
            and summary[a][0] + summary[a][1] < 0]
    null = [f"{ARM_TITLES[a]} ({_points(summary[a][0])} ± {100 * summary[a][1]:.2f} points)" for a in arms
            if a != PLAIN and math.isfinite(summary[a][1]) and summary[a][0] - summary[a][1] <= 0 <= summary[a][0]
            + summary[a][1]]
    harm = [ARM_TITLES[a] for a in arms if a != PLAIN and math.isfinite(summary[a][1])
            and summary[a][0] - summary[a][1] > 0]
    verdict = (f"Over {n_seeds} seed(s), the mean test error is below weight decay alone for "
               f"{', '.join(better) if better else 'no pool arm'}"
               + (f"; the 95% CI of the difference excludes 0 for {', '.join(sure) if sure else 'none of them'}"
                  if n_seeds > 1 else " (a CI needs two seeds or more)")
               + (f"; a null result, not a harm: {'; '.join(null)}" if null else "")
               + (f"; above weight decay alone with a CI that excludes 0: {', '.join(harm)}" if harm else "")
               + ". The paper: 1.6% → below 1.2% with a pool for every layer (at least −0.4 points). "
               "McNemar p per seed compares each arm with weight decay alone on the same test images. "
               "The paper leaves the pool's method open (its size, replacement, attack budget and mixing ratio): "
               "this verdict is a result of our stated choices — " + _choices_text(results) + " — not a test "
               "of the paper's own settings.")
    table = Table(["FC100-100-10 trained with", "test err. (mean)", "per seed", "paper",
                   "Δ vs alone (points, ± 95% CI)", "McNemar p", "FGSM err. ε=0.25",
                   "min. L-BFGS distortion", "× alone (paired)", "training (s)", "cost", "in attacks"], rows,
                  f"§4.2 — ablation of the adversarial pools ({_data_text(results)}; distortion: targeted L-BFGS "
                  f"with random targets on {_n_robust(results)} test images that every arm of a seed classifies "
                  "correctly; training time under the machine's load at the time, curve probes excluded)",
                  verdict, fmt="str")
    verdicts = {arm: curve_verdict([r["arms"][PLAIN]["curve"] for r in runs.values()],
                                   [r["arms"][arm]["curve"] for r in runs.values()]) for arm in arms if arm != PLAIN}
    curve_rows = [[ARM_TITLES[arm], pct(v["final_plain"], 2), pct(v["final_pool"], 2), _points(v["final_diff"]),
                   "n/a" if not math.isfinite(finite(v["ci_low"])) else
                   f"{_points(v['ci_low'])} to {_points(v['ci_high'])}", f"{v['seeds_below']} of {v['seeds']}",
                   "never" if v["below_since_epoch"] is None else str(v["below_since_epoch"])]
                  for arm, v in verdicts.items()]
    curve_table = Table(["pool arm", "alone, last epoch", "pool, last epoch", "Δ (points)", "95% CI",
                         "seeds below", "mean curve below from epoch"], curve_rows,
                        "§4.2 — learning curves: clean test error at the last epoch, each pool arm against weight "
                        "decay alone (same seeds)", " ".join(verdict_sentence(ARM_TITLES[a], v)
                                                             for a, v in verdicts.items()), fmt="str")
    first = next(iter(runs.values()))
    transfer = Table(["adversarial examples of ↓ / fed to →", *(ARM_TITLES[a] for a in arms)],
                     [[ARM_TITLES[src], *(pct(first["evaluation"]["per_arm"][src]["transfer"][dst], 1)
                                          for dst in arms)] for src in arms],
                     f"§4.2 — error of each net on the others' minimal adversarial examples (seed {next(iter(runs))};"
                     " diagonal: 100% by construction)", fmt="str")
    paragraphs = [
        f"Every arm shares the recipe ({results['recipe']['note']}; weight decay λ = "
        f"{results['recipe']['weight_decay']:g} in (λ/2)·Σ‖W‖²), the seed, the epochs and the very same sequence of "
        f"clean minibatches; the pool arms also train on adversarial examples: {results['pool_description']} "
        "(layers per arm as named). A hidden layer's examples are its outputs pushed across the decision boundary of "
        "the layers above it, in [0, 1], and train those layers only, as the paper describes.",
        "Pools over the first seed's runs: " + "; ".join(_pool_text(ARM_TITLES[a], first["arms"][a]["pool"])
                                                        for a in arms if a != PLAIN) + ".",
        f"Learning curves: every {_every(first)} epoch(s), clean test error and FGSM error (ε = "
        f"{first['arms'][PLAIN]['curve']['eps']:g}) on all test images, and the mean minimal untargeted L-BFGS "
        f"distortion on the first {first['arms'][PLAIN]['curve']['n_lbfgs']} test images (those the net gets right)."]
    figures = [Figure(Path(results["curve_figure"]), "§4.2 learning curves: mean over seeds (bold) and each seed "
                      "(faint) of every arm")] if results.get("curve_figure") else []
    return Section("§4.2 — training on adversarial examples", paragraphs, [table, curve_table, transfer], figures)


def _choices_text(results: Mapping[str, Any]) -> str:
    """The choices behind the §4.2 verdict, from the run's own records (pool, recipe)."""
    return f"{results['pool_description']}; {results['recipe']['note']}"


def _data_text(results: Mapping[str, Any]) -> str:
    images = "all 60,000" if results["train_subset"] is None else f"{results['train_subset']:,}"
    return f"{images} training images, {results['epochs']} epochs, {len(results['seeds'])} seed(s)"


def _n_robust(results: Mapping[str, Any]) -> str:
    return span([run["evaluation"]["n_robust"] for run in results["seeds"].values()], ".0f")


def _every(run: Mapping[str, Any]) -> str:
    epochs = run["arms"][PLAIN]["curve"]["epoch"]
    return str(epochs[1] - epochs[0]) if len(epochs) > 1 else str(epochs[0])


def _pool_text(title: str, pool: Mapping[str, Any] | None) -> str:
    if not pool:
        return f"{title}: no pool"
    layers = ", ".join(f"{k} {v['added']} of {v['attacked']} attacks added (mean RMS distortion "
                       f"{num(v['mean_rms_distortion'], '.3f')})" for k, v in pool["layers"].items())
    return f"{title} ({pool['refreshes']} refreshes): {layers}"
