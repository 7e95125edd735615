"""The goodfellow2015 report: a pure function of results.json (`build_report(results) -> Report`), so a committed
report.md can be checked against the results.json beside it. Numbers are written by blindspots.report.format."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...report.document import Figure, Report, Section, Table, run_facts_section
from ...report.format import num, pct, span
from .common import EPSILON, EPSILONS, LOGREG, NETS

TEST_IMAGES = 10_000  # every clean test error of this experiment is measured on the whole MNIST test set
from .figures import _labels


def _cmp(ours: float, paper: float | None, tol: float = 0.10) -> str:
    """'close to' / 'above' / 'below' the paper, with a tolerance in absolute fraction."""
    if paper is None or ours is None:
        return "no paper value"
    d = ours - paper
    if abs(d) <= tol:
        return f"within {num(100 * tol, '.0f')} points of the paper"
    return f"{num(100 * abs(d), '.1f')} points {'above' if d > 0 else 'below'} the paper"


def _gt(value: float | None, threshold: float) -> bool:
    return value is not None and value > threshold


def _row(name: str, f: dict[str, Any], digits: int = 1) -> list[Any]:
    return [name, pct(f["ours"], digits), pct(f["paper"], digits)]


def build_report(results: dict[str, Any]) -> Report:
    """Tables with our numbers beside the paper's, verdict sentences computed from them, figures, facts."""
    f, facts = results["findings"], results["facts"]
    intro = [
        "Reproduction of Goodfellow, Shlens & Szegedy, Explaining and Harnessing Adversarial Examples (ICLR 2015), "
        f"MNIST experiments, on genuine MNIST. Profile: {facts['profile']} ({facts['profile_description']}); seed "
        f"{facts['seed']}; training data: {facts['training_data']}; attacked: {facts['attacked_images']}; ε = 0.25 "
        "unless stated.",
        "Paper values come from the package's reference data file. Every number of ours is in results.json; the run "
        "folder's stages/ held the checkpoints and adversarial sets they were computed from (each FGSM set at ε = "
        "0.25 was re-loaded from disk and re-verified by a fresh forward pass before any number was taken from it). "
        "A published copy keeps the figures only; the command in its provenance.json remakes the rest.",
    ]
    ran = set(results["models"])
    # each section with the nets it needs: a profile that runs some nets only (--set nets=…) gets the others
    plan: list[tuple[set[str], Any]] = [
        ({"softmax", "maxout"}, lambda: _sec_fgsm(f)), ({LOGREG}, lambda: _sec_logreg(f, results)),
        ({"maxout", "maxout_adv"}, lambda: _sec_adv(f, results)), ({"maxout"}, lambda: _sec_learning(results)),
        ({"maxout", "maxout_adv", "maxout_sign", "maxout_uniform"}, lambda: _sec_noise(f)),
        ({"maxout", "rbf"}, lambda: _sec_rbf(f)), ({"softmax", "maxout", "rbf"}, lambda: _sec_rubbish(results)),
        (set(), lambda: _sec_curves(results)), (set(), lambda: _sec_ensemble(results)),
        (set(), lambda: _sec_l1(results)), (set(), lambda: _sec_transfer(results)),
        (set(), lambda: _sec_models(results)), (set(), lambda: _sec_facts(results))]
    sections = [sec for sec in (build() for need, build in plan if need <= ran) if sec is not None]
    skipped = sorted({k for need, _ in plan for k in need} - ran)
    if skipped:
        intro.append(f"This run's profile trains only {', '.join(sorted(ran))}: the sections that need "
                     f"{', '.join(skipped)} are left out.")
    return Report("blindspots — Goodfellow et al. 2015 reproduced", intro, sections)


def _sec_fgsm(f: dict[str, Any]) -> Section:
    e = f["1_fgsm"]
    rows = [_row("shallow softmax: error", e["softmax_error"]),
            _row("shallow softmax: confidence on wrong labels", e["softmax_confidence"]),
            _row("maxout: error", e["maxout_error"]),
            _row("maxout: confidence on wrong labels", e["maxout_confidence"])]
    both = e["softmax_error"]["ours"] > 0.5 and e["maxout_error"]["ours"] > 0.5
    confident = _gt(e["softmax_confidence"]["ours"], 0.5) and _gt(e["maxout_confidence"]["ours"], 0.5)
    verdict = (f"FGSM at ε = 0.25 misleads the shallow softmax on {pct(e['softmax_error']['ours'])} of test images "
               f"({_cmp(e['softmax_error']['ours'], e['softmax_error']['paper'])}) and the maxout net on "
               f"{pct(e['maxout_error']['ours'])} ({_cmp(e['maxout_error']['ours'], e['maxout_error']['paper'])}), "
               f"with mean confidence {pct(e['softmax_confidence']['ours'])} and "
               f"{pct(e['maxout_confidence']['ours'])} on the wrong labels. "
               + ("Both models are fooled on most inputs" if both
                  else "At least one model is fooled on fewer than half the inputs, unlike the paper")
               + (", and their mistakes are confident (mean > 50%), as in the paper." if confident
                  else ", but not all mistakes are confident (a mean of 50% or less), unlike the paper."))
    return Section("1 — FGSM on the shallow softmax and the maxout net", [],
                   [Table(["quantity", "ours", "paper"], rows, "FGSM, ε = 0.25", verdict, fmt="str")])


def _sec_logreg(f: dict[str, Any], results: dict[str, Any]) -> Section:
    e = f["2_logreg"]
    m = results["models"][LOGREG]
    rows = [_row("clean test error", e["clean_error"]), _row("FGSM error, ε = 0.25", e["fgsm_error"]),
            _row("confidence on wrong labels", e["fgsm_confidence"]),
            ["training error", pct(m["train_error"]), "—"]]
    verdict = (f"Logistic regression separates 3s from 7s with {pct(e['clean_error']['ours'], 2)} test error "
               f"(paper {pct(e['clean_error']['paper'], 2)}); the FGSM perturbation, which for this model is "
               f"−ε·y·sign(w) exactly, raises it to {pct(e['fgsm_error']['ours'])} "
               f"({_cmp(e['fgsm_error']['ours'], e['fgsm_error']['paper'])}).")
    fig = Figure(Path(results["figures"]["logreg"]),
                 "The paper's Figure 2: (a) the weights of the 3-vs-7 logistic regression, (b) their sign, "
                 "(c) test 3s and 7s, (d) their FGSM images at ε = 0.25 with the predicted class in red.")
    return Section("2 — Logistic regression, 3 versus 7", [], [Table(["quantity", "ours", "paper"], rows,
                   f"{m['n_train']} training and {m['n_test']} test images of 3s and 7s", verdict, fmt="str")], [fig])


def _sec_adv(f: dict[str, Any], results: dict[str, Any]) -> Section:
    e = f["3_adv_training"]
    rows = [_row("clean test error, plain training", e["clean_error_before"], 2),
            _row("clean test error, adversarial training", e["clean_error_after"], 2),
            _row("FGSM error, plain training", e["fgsm_error_before"]),
            _row("FGSM error, adversarial training", e["fgsm_error_after"]),
            _row("confidence on mistakes, adversarial training", e["confidence_on_mistakes_after"]),
            _row("plain net's FGSM images → adversarially trained net", e["transfer_original_to_adv"]),
            _row("adversarially trained net's FGSM images → plain net", e["transfer_adv_to_original"])]
    if "wide_clean_error" in e:
        rows += [_row("wide adversarially trained net: clean test error (mean over seeds)", e["wide_clean_error"], 2),
                 _row("wide adversarially trained net: FGSM error", e["wide_fgsm_error"])]
    before, after = e["fgsm_error_before"]["ours"], e["fgsm_error_after"]["ours"]
    cb, ca = e["clean_error_before"]["ours"], e["clean_error_after"]["ours"]
    fwd, back = e["transfer_original_to_adv"]["ours"], e["transfer_adv_to_original"]["ours"]
    sentences = [
        f"Adversarial training {'lowers' if after < before else 'does not lower'} the maxout net's FGSM error "
        f"({pct(before)} → {pct(after)}; paper {pct(e['fgsm_error_before']['paper'])} → "
        f"{pct(e['fgsm_error_after']['paper'])}, the latter for a 1600-unit net).",
        f"Clean test error goes from {pct(cb, 2)} to {pct(ca, 2)}: adversarial training "
        f"{_regularises(cb, ca, results)} (paper "
        f"{pct(e['clean_error_before']['paper'], 2)} → {pct(e['clean_error_after']['paper'], 2)})"
        + ("." if e.get("baseline", {}).get("reached", True) else
           f"; the plain net misses the paper's baseline (target ≤ {pct(e['baseline']['target'], 2)}), so this is no "
           "verdict on the paper's claim."),
        f"Its remaining mistakes are made with {pct(e['confidence_on_mistakes_after']['ours'])} mean confidence "
        f"(paper {pct(e['confidence_on_mistakes_after']['paper'])}).",
        f"Transfer: the plain net's FGSM images fool the adversarially trained net on {pct(fwd)} (paper "
        f"{pct(e['transfer_original_to_adv']['paper'])}); the adversarially trained net's images fool the plain "
        f"net on {pct(back)} (paper {pct(e['transfer_adv_to_original']['paper'])}; the paper's values come from "
        f"its 1600-unit net); the paper's asymmetry "
        f"(the second larger) {'holds' if back > fwd else 'does not hold'} here."]
    if "dropout masks" in (results["models"].get("maxout_adv", {}).get("objective") or {}).get("description", ""):
        sentences.append("In training, δ's input gradient goes through the clean pass's input-dropout mask (keep "
                         "0.8), so about 20% of the pixels of each training example get a zero gradient and are not "
                         "perturbed; the test-time FGSM moves every pixel.")
    return Section("3 — Adversarial training of the maxout net (α = 0.5, ε = 0.25)", [],
                   [Table(["quantity", "ours", "paper"], rows, "Adversarial training", " ".join(sentences),
                          fmt="str")])


def _regularises(before: float, after: float, results: dict[str, Any]) -> str:
    """How far the clean-error comparison goes: a direction over seeds with its interval where the curves verdict
    has several seeds; on one seed, consistent or not with the paper, with the unpaired two-proportion p-value
    on the 10,000 test images (a paired test needs both arms' per-image predictions)."""
    if after >= before:
        return "does not improve clean error here"
    n = results["findings"].get("curve_verdicts", {}).get("maxout_adv", {}).get("n", 1)
    if n > 1:
        return f"ends below on average over {n} seeds (see the interval in §3b)"
    return (f"ends below on one seed, consistent with the paper, not yet significant (p ≈ "
            f"{num(two_proportion_p(before, after, TEST_IMAGES), '.2f')}, unpaired)")


def two_proportion_p(p1: float, p2: float, n: int) -> float:
    """Two-sided p-value of the pooled z-test that two error rates, each over `n` images, are equal."""
    pooled = (p1 + p2) / 2
    se = math.sqrt(2 * pooled * (1 - pooled) / n)
    return float(math.erfc(abs(p1 - p2) / se / math.sqrt(2))) if se > 0 else 1.0


def _baseline_sentence(b: dict[str, Any] | None) -> str:
    """Whether the control arm trains as well as the paper's: the condition for any verdict on the claim."""
    if b is None:
        return ""
    if b["reached"]:
        return (f"The plain net reaches {pct(b['plain'], 2)} test error, within the target of {pct(b['target'], 2)} "
                f"for the paper's {pct(b['paper'], 2)} baseline: the comparison below is a fair test of the claim.")
    return (f"The plain net ends at {pct(b['plain'], 2)} test error, above the target of {pct(b['target'], 2)} "
            f"for the paper's {pct(b['paper'], 2)} baseline: its control arm is undertrained or the recipe differs, "
            "so what follows is no verdict on the paper's claim, only a comparison on this recipe and budget.")


def _verdict_sentence(label: str, v: dict[str, Any]) -> str:
    ci = v["ci95"]
    interval = "n/a (one seed)" if ci is None else f"[{num(100 * ci[0], '+.2f')}, {num(100 * ci[1], '+.2f')}] points"
    when = ("never below the plain net's on the epochs both ran" if v["below_from_epoch"] is None else
            f"below the plain net's from retraining epoch {v['below_from_epoch']} on (of {v['common_epochs']} both ran)")
    paired = v.get("mcnemar")
    mcnemar = ("" if not paired else " McNemar on the 10,000 test images, per seed: " + "; ".join(
        f"seed {s}: {m['only_treated_wrong']} images only it gets wrong against {m['only_control_wrong']} only the "
        f"plain net gets wrong, p = {num(m['p'], '.3f')}" for s, m in paired.items()) + ".")
    return (f"{label}: final clean test error {span(v['adv_final'], '.2%')} against {span(v['plain_final'], '.2%')} "
            f"for plain training over {v['n']} seed(s); the difference (adversarial − plain) is "
            f"{num(100 * v['mean_difference'], '+.2f')} points, 95% t-interval {interval}; "
            f"{v['seeds_below']} of {v['n']} seeds end below; the mean curve is {when}. "
            + ("Adversarial training ends below plain training in clean error on this one seed, consistent with the "
               "paper; one seed gives no interval." if v["ends_below"] and ci is None else
               "Adversarial training ends below plain training in clean error here, as in the paper."
               if v["ends_below"] and ci[1] < 0 else
               "Adversarial training ends below on average, but the interval includes no difference."
               if v["ends_below"] else "The paper's direction (adversarial below plain) does not reproduce here.")
            + mcnemar)


def _sec_learning(results: dict[str, Any]) -> Section:
    """Per-seed final values of every protocol net and the verdicts computed from the curves."""
    labels = _labels()
    rows = []
    for key, runs in results["curves"].items():
        for r in runs:
            c, es = r["retrain"], r["early_stop"]
            last = {k: v[-1] for k, v in c.items() if v}
            rows.append([labels[key], str(r["seed"]), str(es["best_epoch"]), pct(es["best_value"], 2),
                         pct(last["test_error"], 2), pct(last.get("fgsm_error")), num(last.get("lbfgs_distortion"), ".4f"),
                         num(last["wall_s"], ".0f")])
    verdicts = " ".join(_verdict_sentence(labels[k], v) for k, v in results["findings"]["curve_verdicts"].items())
    verdicts = (_baseline_sentence(results["findings"]["3_adv_training"].get("baseline")) + " " + verdicts).strip()
    fig = Figure(Path(results["figures"]["learning_curves"]),
                 "Learning curves of the retraining phase (clean test error, FGSM error at ε = 0.25, mean minimal "
                 "L-BFGS distortion) and the early-stopping phase's validation criterion, every seed.")
    return Section("3b — Learning curves: plain vs adversarial training, and the noise controls", [],
                   [Table(["model", "seed", "early-stopped epochs", "best validation criterion", "clean test error",
                           "FGSM error", "min. L-BFGS distortion", "retrain wall (s)"], rows,
                          "Every protocol net at the end of its retraining (all numbers per epoch in results.json)",
                          verdicts, fmt="str")], [fig])


def _sec_noise(f: dict[str, Any]) -> Section:
    e, a = f["4_noise_controls"], f["3_adv_training"]
    rows = [_row("±ε sign noise: FGSM error", e["sign_noise_fgsm_error"]),
            _row("±ε sign noise: confidence on mistakes", e["sign_noise_confidence"]),
            _row("U(−ε, ε) noise: FGSM error", e["uniform_noise_fgsm_error"]),
            _row("U(−ε, ε) noise: confidence on mistakes", e["uniform_noise_confidence"]),
            _row("(FGSM adversarial training: FGSM error)", a["fgsm_error_after"]),
            _row("(plain training: FGSM error)", a["fgsm_error_before"])]
    adv, plain = a["fgsm_error_after"]["ours"], a["fgsm_error_before"]["ours"]
    worst = min(e["sign_noise_fgsm_error"]["ours"], e["uniform_noise_fgsm_error"]["ours"])
    gap_noise = plain - worst
    gap_adv = plain - adv
    verdict = (f"Training with noise of the same size instead of FGSM leaves FGSM error at "
               f"{pct(e['sign_noise_fgsm_error']['ours'])} (sign noise) and {pct(e['uniform_noise_fgsm_error']['ours'])} "
               f"(uniform noise), against {pct(plain)} for plain training and {pct(adv)} for adversarial training: "
               f"noise removes {num(100 * gap_noise, '.1f')} points of FGSM error at best, adversarial training "
               f"{num(100 * gap_adv, '.1f')}. "
               + ("Adversarial training itself gained less than 2 points here, so this run cannot tell the two "
                  "apart." if gap_adv < 0.02 else "As in the paper, noise is no substitute for adversarial examples."
                  if gap_adv > 2 * max(gap_noise, 0.0) else "Unlike the paper, noise training helps comparably here."))
    return Section("4 — Controls: training with noise instead of FGSM", [],
                   [Table(["quantity", "ours", "paper"], rows, "Noise controls (same recipe, same epochs)", verdict,
                          fmt="str")])


def _sec_rbf(f: dict[str, Any]) -> Section:
    e, m = f["5_rbf"], f["1_fgsm"]
    rows = [_row("FGSM error", e["fgsm_error"]), _row("confidence on mistakes (unit output)", e["confidence_on_mistakes"]),
            _row("mean confidence on clean test images", e["confidence_clean"]), _row("clean test error", e["clean_error"])]
    low_conf = not _gt(e["confidence_on_mistakes"]["ours"], e["confidence_clean"]["ours"] / 2)
    verdict = (f"The RBF net's FGSM error is {pct(e['fgsm_error']['ours'])} "
               f"({_cmp(e['fgsm_error']['ours'], e['fgsm_error']['paper'])}; maxout: "
               f"{pct(m['maxout_error']['ours'])}); its mistakes carry {pct(e['confidence_on_mistakes']['ours'])} "
               f"mean unit output against {pct(e['confidence_clean']['ours'])} on clean images: "
               + ("it knows when it is being fooled, as the paper argues."
                  if low_conf else "unlike the paper, its mistakes are not markedly less confident."))
    return Section("5 — The RBF network", [], [Table(["quantity", "ours", "paper"], rows, "RBF net, ε = 0.25",
                                                     verdict, fmt="str")])


def _sec_rubbish(results: dict[str, Any]) -> Section:
    r = results["rubbish"]
    labels = {n.key: n.label for n in NETS}
    names = [r["headline"]] + [n for n in r["results"] if n != r["headline"]]
    tables = []
    for name in names:
        per, head = r["results"][name], name == r["headline"]
        rows = []
        for key in (n.key for n in NETS if n.key in per):
            v = per[key]
            paper_key = key if head and key in ("softmax", "maxout", "rbf") else None
            paper = results["findings"]["paper_rubbish"].get(paper_key or "", {})
            pf, pc = paper.get("fooled"), paper.get("confidence")
            rows.append([labels[key], pct(v["fooled"], 2), pct(pf, 2), pct(v["confidence"]), pct(pc)])
        verdict = ""
        if head:
            mx, sm, rb = per["maxout"]["fooled"], per["softmax"]["fooled"], per["rbf"]["fooled"]
            verdict = (f"Of {r['n']} noise images, the maxout net calls {pct(mx, 2)} a digit, the shallow softmax "
                       f"{pct(sm, 2)} and the RBF net {pct(rb, 2)}; the paper's ordering (maxout > softmax > RBF = 0%) "
                       f"{'holds' if mx > sm > rb == 0 else 'does not hold'} here.")
        tables.append(Table(["model", "classified as a digit", "paper", "mean confidence of those", "paper"], rows,
                            f"Rubbish inputs, {r['settings'][name]['text']}" + (" (headline setting)" if head else ""),
                            verdict, fmt="str"))
    para = [f"An input counts as 'classified as a digit' when the model's confidence is at least {r['threshold']}: "
            "the largest softmax probability, or for the RBF net the largest unit output (its outputs are "
            "independent, so all ten may be near 0). The paper does not state its noise distribution; three are "
            "shown, the paper's numbers beside the headline one."]
    return Section("6 — Rubbish-class inputs (Gaussian noise)", para, tables)


def _sec_curves(results: dict[str, Any]) -> Section:
    fg = results["fgsm"]
    labels = _labels()
    eps = EPSILONS
    rows = [[labels[k]] + [pct(e) for e in v["error"]] for k, v in fg.items()]
    monotone = [labels[k] for k, v in fg.items() if all(a <= b + 1e-9 for a, b in zip(v["error"], v["error"][1:]))]
    k25 = eps.index(EPSILON)
    best = min((k for k in fg if k != LOGREG), key=lambda k: fg[k]["error"][k25])
    sentences = [f"Error grows monotonically with ε for {len(monotone)} of {len(fg)} models; at ε = 0.25 the most "
                 f"robust 10-class model is '{labels[best]}' ({pct(fg[best]['error'][k25])})."]
    for k, v in fg.items():
        err = v["error"]
        peak = max(range(1, k25), key=lambda j: err[j], default=None)
        if peak is not None and err[peak] > min(err[peak:k25 + 1]) + 0.02:
            low = min(range(peak, k25 + 1), key=lambda j: err[j])
            sentences.append(f"'{labels[k]}' resists FGSM better at ε = {eps[low]:g} ({pct(err[low])}) than at the "
                             f"smaller ε = {eps[peak]:g} ({pct(err[peak])}): a non-monotone curve warns that its "
                             "gradient is a poor guide near the data (gradient masking), so its FGSM error can "
                             "overstate its robustness to stronger attacks.")
    verdict = " ".join(sentences)
    fig = Figure(Path(results["figures"]["curves"]), "Error on FGSM images vs ε for every model; crosses mark the "
                 "paper's values at ε = 0.25.")
    figs = [fig] + [Figure(Path(results["figures"][f"examples {k}"]),
                           f"{labels[k]}: clean test images (top) and their FGSM images at ε = 0.25 (bottom)")
                    for k in ("maxout", "maxout_adv", "rbf") if f"examples {k}" in results["figures"]]
    return Section("7 — Error vs ε", [], [Table(["model"] + [f"ε = {e:g}" for e in eps], rows,
                                                "FGSM error at each ε (one gradient per image, every ε re-checked)",
                                                verdict, fmt="str")], figs)


def _sec_ensemble(results: dict[str, Any]) -> Section | None:
    """Ensembles are not a defence (the paper's 12 maxout nets), where the profile ran an ensemble."""
    ens = results.get("ensemble")
    if not ens:
        return None
    e = results["findings"]["8_ensemble"]
    n = e["members"]
    lo, hi = e["error_attack_one_member_min"]["ours"], e["error_attack_one_member_max"]["ours"]
    rows = [_row("clean test error of the ensemble", e["clean_error"], 2),
            _row("clean test error of a member (mean)", e["member_clean_error_mean"], 2),
            _row("FGSM error, the ensemble's gradient", e["error"]),
            _row("confidence on mistakes, the ensemble's gradient", e["wrong_confidence"]),
            [f"FGSM error, one member's gradient (mean of {n}; range {pct(lo)}–{pct(hi)})",
             pct(e["error_attack_one_member"]["ours"]), pct(e["error_attack_one_member"]["paper"])],
            _row("confidence on mistakes, one member's gradient (mean)", e["wrong_confidence_attack_one_member"]),
            _row("(each member attacked and judged alone: FGSM error, mean)", e["member_own_fgsm_error_mean"])]
    whole, one = e["error"]["ours"], e["error_attack_one_member"]["ours"]
    alone = e["member_own_fgsm_error_mean"]["ours"]
    pw, po = e["error"]["paper"], e["error_attack_one_member"]["paper"]
    para = [f"{n} {ens['spec']} nets with seeds {', '.join(str(m['seed']) for m in ens['members'])}, each trained "
            f"by the original maxout recipe for a fixed {ens['epochs']} epochs on {ens['n_train']:,} training rows "
            f"(rows 0–{ens['n_train'] - 1:,}; no early stopping). The ensemble's output is the mean of the members' softmax "
            "probabilities, and its logits the log of that mean, so FGSM's cross-entropy is −log of the mean "
            "probability of the true label. Each member's FGSM images are judged by the whole ensemble."
            + ("" if n == 12 else f" The paper's ensemble has 12 members; this profile's has {n}.")]
    verdict = (f"FGSM at ε = 0.25 with the ensemble's own gradient misclassifies {pct(whole)} of "
               f"{ens['n_attacked']:,} test images ({_cmp(whole, e['error']['paper'])}); with one member's gradient, "
               f"{pct(one)} on average ({pct(lo)}–{pct(hi)} over the members; "
               f"{_cmp(one, e['error_attack_one_member']['paper'])}). "
               + ("Both attacks fool the ensemble on most inputs: as in the paper, ensembling is no defence. "
                  if whole > 0.5 and one > 0.5 else
                  "At least one attack fools the ensemble on fewer than half the inputs, unlike the paper. ")
               + f"The ensemble's gradient fools it {'more' if whole > one else 'less'} often than a member's "
               + (f"({'as' if (whole > one) == (pw > po) else 'unlike'} in the paper, {pct(pw)} against {pct(po)})"
                  if pw is not None and po is not None else "(no paper values)")
               + "; a member attacked and "
               f"judged alone is fooled on {pct(alone)}, so averaging "
               + (f"removes {num(100 * (alone - one), '.1f')} points of what a member's own FGSM images do."
                  if alone - one >= 0.005 else "barely changes it."))
    return Section("8 — Ensembles are not a defence", para,
                   [Table(["quantity", "ours", "paper"], rows, f"Ensemble of {n} maxout nets, FGSM at ε = 0.25",
                          verdict, fmt="str")])


def _sec_l1(results: dict[str, Any]) -> Section | None:
    """L1 weight decay on the first layer beside plain and adversarial training, where the profile ran it."""
    l1 = results.get("l1_decay")
    if not l1:
        return None
    f = results["findings"]["9_l1_decay"]
    paper_c = f["paper_coefficient"]
    rows = []
    for arm in l1["arms"]:
        v = f[arm["key"]]
        floor = v["train_error"]["paper"]
        rows.append([arm["label"], pct(v["train_error"]["ours"], 2), "above " + pct(floor) if floor else "—",
                     pct(v["test_error"]["ours"], 2), pct(v["fgsm_error"]["ours"])])
    arms = {a["key"]: a for a in l1["arms"]}
    plain, adv = arms["plain"], arms["adversarial"]
    decayed = [a for a in l1["arms"] if a["l1_first"]]
    strongest = max(decayed, key=lambda a: a["l1_first"])
    curve = strongest["train_error_curve"]
    floor = f[strongest["key"]]["train_error"]["paper"]
    def trains(a: dict[str, Any]) -> bool:  # near the plain net's training error: within 2 points or 2×
        return bool(a["train_error"] <= max(2 * plain["train_error"], plain["train_error"] + 0.02))

    trained = [a for a in decayed if trains(a)]
    gap_adv = plain["fgsm_error"] - adv["fgsm_error"]
    gap_l1 = max((plain["fgsm_error"] - a["fgsm_error"] for a in trained), default=None)
    para = [f"{l1['spec']} nets, seed {l1['seed']}, the original maxout recipe for a fixed {l1['epochs']} epochs on "
            f"{l1['n_train']:,} training rows (rows 0–{l1['n_train'] - 1:,}): L1 decay adds c·Σ|W| over the first layer's weights to "
            "the mean cross-entropy; training error is measured without dropout on those rows after every epoch. "
            "The paper gives one number: at c = " + num(paper_c, "g") + " training error stalls above "
            + pct(floor) + "."]
    sentences = [
        f"At c = {strongest['l1_first']:g} training error ends at {pct(strongest['train_error'], 2)} (lowest over "
        f"{len(curve)} epochs {pct(min(curve), 2)}; plain training {pct(plain['train_error'], 2)}): "
        + (f"it stays above {pct(floor)}, as in the paper." if floor is not None and min(curve) > floor else
           f"it does not stay above {pct(floor)}, unlike the paper." if floor is not None else ""),
        f"FGSM error at ε = 0.25: plain {pct(plain['fgsm_error'])}, adversarial training {pct(adv['fgsm_error'])}, "
        + ", ".join(f"L1 {a['l1_first']:g} {pct(a['fgsm_error'])}" for a in decayed) + "."]
    if not trains(adv):
        sentences.append(f"Adversarial training itself did not train in this budget (training error "
                         f"{pct(adv['train_error'], 2)} against {pct(plain['train_error'], 2)} plain), so its lower "
                         "FGSM error is an undertrained net's and this run cannot compare L1 decay with it.")
    elif gap_l1 is None:
        sentences.append("No L1 coefficient trained to near the plain net's training error, so none tests whether "
                         "a usable L1 decay buys robustness.")
    else:
        sentences.append(
            f"The coefficients that still train (training error within 2 points or 2× of plain) lower FGSM error "
            f"by at most {num(100 * gap_l1, '.1f')} points; adversarial training by {num(100 * gap_adv, '.1f')}. "
            + ("Adversarial training itself gained less than 2 points here, so this run cannot tell them apart."
               if gap_adv < 0.02 else "As in the paper, L1 weight decay is no substitute for adversarial training."
               if gap_adv > 2 * max(gap_l1, 0.0) else "Unlike the paper, L1 decay buys comparable robustness here."))
    return Section("9 — L1 weight decay is not adversarial training", para,
                   [Table(["training", "training error", "paper", "clean test error", "FGSM error"], rows,
                          "L1 decay on the first layer vs plain and adversarial training (same seed and budget)",
                          " ".join(sentences), fmt="str")])


def _sec_transfer(results: dict[str, Any]) -> Section | None:
    t = results["transfer"]
    if len(t["columns"]) < 2:  # one net: nothing to transfer to
        return None
    labels = _labels()
    rows = [[labels[r]] + [pct(t["rows"][r][c]) for c in t["columns"]] for r in t["columns"]]
    off = [t["rows"][r][c] for r in t["columns"] for c in t["columns"] if r != c]
    verdict = (f"Off-diagonal cells (FGSM images of one model fed to another) range over {pct(min(off))}–"
               f"{pct(max(off))}: FGSM examples transfer, to a degree that depends on the pair.")
    return Section("Transfer between all 10-class models (ε = 0.25)", [],
                   [Table(["FGSM images of ↓ / fed to →"] + [labels[c] for c in t["columns"]], rows,
                          "Error of each column model on each row model's FGSM set", verdict, fmt="str")])


def _sec_models(results: dict[str, Any]) -> Section:
    rows = []
    for key, m in results["models"].items():
        at = results["fgsm"][key]["at_0.25"]
        recipe = m.get("recipe") or {}
        rows.append([m.get("label", key), pct(m["train_error"], 2), pct(m["test_error"], 2),
                     str(m.get("epochs", recipe.get("epochs", "—"))), str(m.get("n_train", "—")),
                     num(m.get('wall_time_s'), '.0f'), str(at["zero_gradient_images"])])
    verdict = ("'zero-gradient images' counts attacked images whose FGSM step was all zero (the cross-entropy "
               "saturated in float32); such images cannot be moved by FGSM and count as not fooled unless "
               "misclassified already.")
    recipes = []
    for key, m in results["models"].items():
        r = m.get("recipe") or {}
        unused = ("note", "lr", "batch_size", "momentum") if str(r.get("optimizer", "")).startswith("lbfgs") \
            else ("note",)
        shown = ", ".join(f"{k} {v}" for k, v in r.items() if v not in (None, 0, 0.0, "") and k not in unused)
        objective = (m.get("objective") or {}).get("description")
        recipes.append(f"{m.get('label', key)}: {shown}" + (f"; {r['note']}" if r.get("note") else "")
                       + (f"; objective {objective}" if objective else ""))
    return Section("Models", ["Training recipes (also in each checkpoint's JSON):"] + recipes,
                   [Table(["model", "train err.", "test err.", "epochs", "training images", "train wall (s)",
                           "zero-gradient images"], rows, "Trained models", verdict, fmt="str")])


def _sec_facts(results: dict[str, Any]) -> Section:
    return run_facts_section(results)


def terminal_summary(results: dict[str, Any]) -> str:
    """A compact text table for the end of a run: each experiment's headline numbers, ours (paper)."""
    f = results["findings"]
    lines = [f"{'experiment (ε = 0.25)':<52} {'ours':>8} {'paper':>8}"]

    def add(name: str, v: dict[str, Any], digits: int = 1) -> None:
        if v["ours"] is None:  # a net this profile does not run
            return
        lines.append(f"{name:<52} {pct(v['ours'], digits):>8} {pct(v['paper'], digits):>8}")

    add("1 softmax FGSM error", f["1_fgsm"]["softmax_error"])
    add("1 softmax confidence on wrong labels", f["1_fgsm"]["softmax_confidence"])
    add("1 maxout FGSM error", f["1_fgsm"]["maxout_error"])
    add("1 maxout confidence on wrong labels", f["1_fgsm"]["maxout_confidence"])
    add("2 logreg 3v7 clean error", f["2_logreg"]["clean_error"], 2)
    add("2 logreg 3v7 FGSM error", f["2_logreg"]["fgsm_error"])
    a = f["3_adv_training"]
    add("3 maxout clean error, plain", a["clean_error_before"], 2)
    add("3 maxout clean error, adversarial training", a["clean_error_after"], 2)
    add("3 maxout FGSM error, adversarial training", a["fgsm_error_after"])
    add("3 confidence on mistakes, adversarial training", a["confidence_on_mistakes_after"])
    add("3 transfer plain -> adversarially trained", a["transfer_original_to_adv"])
    add("3 transfer adversarially trained -> plain", a["transfer_adv_to_original"])
    add("4 FGSM error after ±ε sign-noise training", f["4_noise_controls"]["sign_noise_fgsm_error"])
    add("4 FGSM error after U(-ε, ε)-noise training", f["4_noise_controls"]["uniform_noise_fgsm_error"])
    add("5 RBF FGSM error", f["5_rbf"]["fgsm_error"])
    add("5 RBF confidence on mistakes", f["5_rbf"]["confidence_on_mistakes"])
    add("5 RBF confidence on clean images", f["5_rbf"]["confidence_clean"])
    r = f["6_rubbish"]
    add(f"6 noise called a digit: maxout ({r['setting']})", r["maxout_fooled"], 2)
    add("6 noise called a digit: softmax", r["softmax_fooled"], 2)
    add("6 noise called a digit: RBF", r["rbf_fooled"], 2)
    if "8_ensemble" in f:
        e = f["8_ensemble"]
        add(f"8 ensemble of {e['members']}: FGSM error, ensemble's gradient", e["error"])
        add("8 ensemble: FGSM error, one member's gradient (mean)", e["error_attack_one_member"])
        add("8 ensemble: clean error", e["clean_error"], 2)
    if "9_l1_decay" in f:
        for key, v in f["9_l1_decay"].items():
            if isinstance(v, dict):
                name = f"L1 {v['l1_first']:g}" if v["l1_first"] else key
                add(f"9 {name}: training error" + (" (paper: above)" if v["train_error"]["paper"] else ""),
                    v["train_error"], 2)
                add(f"9 {name}: FGSM error", v["fgsm_error"])
    lines.append("wall time: " + ", ".join(f"{k} {num(v, '.0f')} s" for k, v in results["wall_time_s"].items()))
    return "\n".join(lines)
