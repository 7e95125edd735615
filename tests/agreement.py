"""Does a rerun of a quick reproduction agree with the committed one, up to what another machine may change?

Float reductions differ between processors and kernels, and training amplifies that into different nets, so a rerun
elsewhere moves every measured number by about its sampling error (and a property of one trained net by more). This
module compares each number of a committed results.json with the rerun's by its kind:
- a rate over n images (or a mean of values in [0, 1], whose variance is at most μ(1 − μ)): within Z standard
  errors of the difference of two proportions, sqrt(p̄(1 − p̄)(1/n₁ + 1/n₂)), n read from the results themselves;
- a mean of positive values over n (a distortion, a ratio): within Z standard errors of a mean, relative, with a
  coefficient of variation of CV (Z·CV·sqrt(2/n): 37% over 60 images);
- a p-value: by its verdict (below ALPHA or not); a test statistic (U, t, AUC) not at all (its p-value carries it);
- an epoch (early stopping, first epoch below): within EPOCH_WINDOW;
- a count of config (n, seeds, sizes), a label, a flag, a verdict: exactly (a verdict's text but for its numbers);
- a property of one trained net with no sampling error (a spectral bound, a unit's index, a per-epoch curve): not
  at all; the verdict drawn from it is compared instead.
A difference then means the code computes something else, not that the machine differs; `source_changes` says which
stages' source hashes differ from the committed run's, to tell a code change from floats."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from blindspots.report.publish import RUN_KEYS

Z = 4.0  # standard errors a rerun's rate may differ by (3.5 seen: maxout's rubbish rate 0.400 vs 0.325 over 1,000)
# per-image spread of a mean's values over its mean: 0.32-0.45 measured for the L-BFGS RMS distortions of the
# szegedy2014 quick run's nine attacks (60 images each), rounded up
CV = 0.5
ALPHA = 0.05  # the level a p-value's verdict is read at
EPOCH_WINDOW = 2  # epochs an early-stopping epoch may move by
NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?%?")

Where = tuple[str | int, ...]
NFinder = Callable[[dict[str, Any], Where], "float | None"]


@dataclass(frozen=True)
class Rule:
    """Values at paths matching `pattern` (a regex searched in the dotted path, list items as [i]) are of `kind`:
    "rate", "count", "mean", "p", "epoch", "exact", "text" (exact but for the numbers in it) or "skip"; `n` finds
    the n of a rate, count or mean in a results object."""

    pattern: str
    kind: str
    n: NFinder | None = None


def dotted(path: Where) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def get(results: Any, path: Where) -> Any:
    for p in path:
        results = results[p]
    return results


def nearest(*keys: str, default: NFinder | None = None) -> NFinder:
    """n as the first of `keys` found beside the number or in a dict above it (the closest first)."""

    def find(results: dict[str, Any], path: Where) -> float | None:
        node: Any = results
        nodes = [node]
        for p in path[:-1]:
            node = node[p]
            nodes.append(node)
        for node in reversed(nodes):
            if isinstance(node, dict):
                for k in keys:
                    if isinstance(node.get(k), (int, float)) and not isinstance(node.get(k), bool):
                        return float(node[k])
        return default(results, path) if default else None

    return find


def at(template: str) -> NFinder:
    """n at a fixed dotted path of the results, `{i}` filled with the i-th component of the number's path."""

    def find(results: dict[str, Any], path: Where) -> float | None:
        node: Any = results
        for part in template.format(*path).split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return float(node) if isinstance(node, (int, float)) else None

    return find


def times(rate: NFinder, count: NFinder) -> NFinder:
    """n = rate × count: the images a mean over the misclassified ones (or the fooled ones) is taken over."""

    def find(results: dict[str, Any], path: Where) -> float | None:
        r, c = rate(results, path), count(results, path)
        return None if r is None or c is None else max(r * c, 1.0)

    return find


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def leaves(node: Any, path: Where = ()) -> Iterator[tuple[Where, Any]]:
    """Every leaf of a results object with its path, run facts (RUN_KEYS, *_s: times, paths, hashes) left out."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k.endswith("_s") or k == "_stage" or any(r in k for r in RUN_KEYS):
                continue
            yield from leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from leaves(v, (*path, i))
    else:
        yield path, node


def differences(ours: dict[str, Any], committed: dict[str, Any], rules: list[Rule], *, under: Where = ()) -> list[str]:
    """'path: ours vs committed (why)' for every number under `under` of `committed` that `ours` does not reproduce
    by its kind (the first rule whose pattern matches; no rule: exact)."""
    out: list[str] = []
    compiled = [(re.compile(r.pattern), r) for r in rules]
    for path, b in leaves(get(committed, under), under):
        where = dotted(path)
        rule = next((r for p, r in compiled if p.search(where)), None)
        kind = rule.kind if rule else "exact"
        if kind == "skip":
            continue
        try:
            a = get(ours, path)
        except (KeyError, IndexError, TypeError):
            out.append(f"{where}: missing")
            continue
        why = _disagreement(kind, a, b, rule, ours, committed, path)
        if why is not None:
            out.append(f"{where}: {a!r} vs {b!r}" + (f" ({why})" if why else ""))
    return out


def _disagreement(kind: str, a: Any, b: Any, rule: Rule | None, ours: dict[str, Any], committed: dict[str, Any],
                  path: Where) -> str | None:
    """None when `a` (ours) agrees with `b` (committed) as values of `kind` do, else why not ('' if plainly unequal)."""
    numbers = _number(a) is not None and _number(b) is not None
    if kind == "text" and isinstance(a, str) and isinstance(b, str):
        return None if NUMBER.sub("#", a) == NUMBER.sub("#", b) else "the text differs beyond its numbers"
    if kind in ("exact", "text") or not numbers:
        return None if a == b or (a != a and b != b) else ""
    if kind == "p":
        return None if (a < ALPHA) == (b < ALPHA) else f"significant at {ALPHA} in one run only"
    if kind == "epoch":
        return None if abs(a - b) <= EPOCH_WINDOW else f"more than {EPOCH_WINDOW} epochs apart"
    assert rule is not None and rule.n is not None, f"rule {rule} needs n"
    n_ours, n_committed = rule.n(ours, path), rule.n(committed, path)
    if not n_ours or not n_committed:
        return "its n is not in the results"
    if kind in ("rate", "count"):  # a count of n compared as the rate count / n
        a, b = (a / n_ours, b / n_committed) if kind == "count" else (a, b)
        p = min(max((a + b) / 2, 0.0), 1.0)
        se = math.sqrt(p * (1 - p) * (1 / n_ours + 1 / n_committed))
        if abs(a - b) <= Z * se + 1e-9:
            return None
        return f"{abs(a - b) / se:.1f} standard errors apart, n = {n_ours:g}" if se else f"n = {n_ours:g}"
    if kind == "mean":
        tol = Z * CV * math.sqrt(1 / n_ours + 1 / n_committed)
        if abs(a - b) <= tol * max(abs(a), abs(b)) + 1e-12:
            return None
        return f"more than {tol:.0%} apart, n = {n_committed:g}"
    raise ValueError(f"unknown kind {kind!r}")


def stage_hashes(results: Any) -> dict[str, str]:
    """Stage name -> the source hash its `_stage` record in a results object holds."""
    out: dict[str, str] = {}
    if isinstance(results, dict):
        stage = results.get("_stage")
        if isinstance(stage, dict) and isinstance(stage.get("source_sha256"), str):
            out[stage["name"]] = stage["source_sha256"]
        for v in results.values():
            out.update(stage_hashes(v))
    elif isinstance(results, list):
        for v in results:
            out.update(stage_hashes(v))
    return out


def source_changes(ours: dict[str, Any], committed: dict[str, Any]) -> str:
    """Whether the stages of the rerun ran the same source as the committed run's (their recorded source hashes)."""
    a, b = stage_hashes(ours), stage_hashes(committed)
    common = sorted(set(a) & set(b))
    changed = [s for s in common if a[s] != b[s]]
    if not changed:
        return (f"the source hashes of all {len(common)} stages both runs record are the committed run's: the code is "
                "the same, so only the floats differ (another machine): widen the kind's tolerance if it is honest")
    return (f"the code changed since the committed run: {len(changed)} of {len(common)} stages have another source "
            f"hash (e.g. {', '.join(changed[:4])}); if the change was meant, republish the quick run")


def report(diffs: list[str], ours: dict[str, Any], committed: dict[str, Any]) -> str:
    return (f"{len(diffs)} numbers of the committed quick run do not come out again beyond what another machine "
            f"explains; {source_changes(ours, committed)}:\n  " + "\n  ".join(diffs[:25]))


def const(n: float) -> NFinder:
    """An n the results do not record (the size of MNIST's test set, read from the data by the caller)."""
    return lambda results, path: float(n)


def goodfellow_rules(n_test: int) -> list[Rule]:
    """The kinds of goodfellow2015's findings: rates over the attacked test images (each model's n_attacked), over
    the noise images (rubbish.n) or the test set; confidences as means over the images they average."""
    test = const(n_test)

    def attacked(key: str) -> NFinder:
        return at(f"fgsm.{key}.n_attacked")

    def mistakes(error: str, count: NFinder) -> NFinder:
        return times(at(f"findings.{error}.ours"), count)

    noise = at("rubbish.n")
    ensemble = at("ensemble.n_attacked")
    f = r"^findings\."
    rules = [
        Rule(r"\.paper$", "exact"),
        Rule(f + r"curve_verdicts\.\w+\.(differences|mean_difference|ci95)", "skip"),  # its parts are compared
        # the sign of a mean of two seeds' differences (at the end, or from which epoch on) whose 95% CI holds 0: a coin
        # flip on another machine (below from epoch 2 published at 2 threads, never at 1 thread)
        Rule(f + r"curve_verdicts\.\w+\.(ends_below|seeds_below|below_from_epoch)$", "skip"),
        Rule(f + r"curve_verdicts\.\w+\.(adv|plain)_final", "rate", test),
        Rule(f + r"curve_verdicts\.\w+\.(\w+_epochs|common_epochs)", "epoch"),
        Rule(f + r"7_curves\.(\w+)\.error\[", "rate",
             lambda r, p: _number(get(r, ("fgsm", p[2], "n_attacked")))),
        # how much Gaussian noise a quick maxout net calls a digit is the net's own: training noise alone moves it far
        # past its sampling error over 1,000 images (same code: 0.325 published at 2 threads, 0.626 at 1 thread)
        Rule(f + r"6_rubbish\.maxout_fooled\.ours$", "skip"),
        Rule(f + r"6_rubbish\.\w+_fooled\.ours$", "rate", noise),
        Rule(f + r"3_adv_training\.baseline\.plain$", "rate", test),
        Rule(f + r"8_ensemble\.(member_)?clean_error", "rate", test),
        Rule(f + r"8_ensemble\.wrong_confidence\.ours$", "rate", mistakes("8_ensemble.error", ensemble)),
        Rule(f + r"8_ensemble\.wrong_confidence_attack_one_member\.ours$", "rate",
             mistakes("8_ensemble.error_attack_one_member", ensemble)),
        Rule(f + r"8_ensemble\.\w+\.ours$", "rate", ensemble),
        Rule(f + r"9_l1_decay\.[\w.-]+\.train_error\.ours$", "rate", at("l1_decay.n_train")),
        Rule(f + r"9_l1_decay\.[\w.-]+\.test_error\.ours$", "rate", test),
        Rule(f + r"9_l1_decay\.[\w.-]+\.fgsm_error\.ours$", "rate", ensemble),
    ]
    singles = {  # finding -> (its n)
        "1_fgsm.softmax_error": attacked("softmax"), "1_fgsm.maxout_error": attacked("maxout"),
        "1_fgsm.softmax_confidence": mistakes("1_fgsm.softmax_error", attacked("softmax")),
        "1_fgsm.maxout_confidence": mistakes("1_fgsm.maxout_error", attacked("maxout")),
        "2_logreg.clean_error": attacked("logreg37"), "2_logreg.fgsm_error": attacked("logreg37"),
        "2_logreg.fgsm_confidence": mistakes("2_logreg.fgsm_error", attacked("logreg37")),
        "3_adv_training.clean_error_before": test, "3_adv_training.clean_error_after": test,
        "3_adv_training.fgsm_error_before": attacked("maxout"),
        "3_adv_training.fgsm_error_after": attacked("maxout_adv"),
        "3_adv_training.confidence_on_mistakes_after": mistakes("3_adv_training.fgsm_error_after",
                                                                attacked("maxout_adv")),
        "3_adv_training.transfer_original_to_adv": attacked("maxout"),
        "3_adv_training.transfer_adv_to_original": attacked("maxout_adv"),
        "4_noise_controls.sign_noise_fgsm_error": attacked("maxout_sign"),
        "4_noise_controls.sign_noise_confidence": mistakes("4_noise_controls.sign_noise_fgsm_error",
                                                           attacked("maxout_sign")),
        "4_noise_controls.uniform_noise_fgsm_error": attacked("maxout_uniform"),
        "4_noise_controls.uniform_noise_confidence": mistakes("4_noise_controls.uniform_noise_fgsm_error",
                                                              attacked("maxout_uniform")),
        "4_noise_controls.sign_noise_clean_error": test, "4_noise_controls.uniform_noise_clean_error": test,
        "5_rbf.fgsm_error": attacked("rbf"), "5_rbf.confidence_clean": attacked("rbf"), "5_rbf.clean_error": test,
        "5_rbf.confidence_on_mistakes": mistakes("5_rbf.fgsm_error", attacked("rbf")),
        "6_rubbish.maxout_confidence": mistakes("6_rubbish.maxout_fooled", noise),
        "6_rubbish.softmax_confidence": mistakes("6_rubbish.softmax_fooled", noise),
    }
    return [Rule("^findings\\." + re.escape(k) + r"\.ours$", "rate", n) for k, n in singles.items()] + rules


def szegedy_rules(n_test: int) -> list[Rule]:
    """The kinds of szegedy2014's numbers, by their keys: rates over the attacked images (n_attacked, or the run's
    images_attacked_per_model for the transfer tables), the test set or the training subset; distortions and distances
    as means over their images; p-values by their verdict; a trained net's own properties (spectral bounds, unit
    indices, per-image exact distances) left to the verdicts drawn from them."""
    per_model = at("facts.images_attacked_per_model")
    attacked = nearest("n_attacked", "attacked", "paired_n", "compared", "images", "n", default=per_model)
    return [
        Rule(r"\.(recipe|profile|pool_config|attack_params|curve\.lbfgs|settings|sizes)\.", "exact"),  # configuration
        Rule(r"(ambiguous_units|test_indices|\.classes)\[", "skip"),  # which units or images: a net's own
        Rule(r"^section4_3_spectral\.models\.[^.]+\.(layers\[\d+\]\.(bound|lower)|product)$", "skip"),
        Rule(r"^section4_3_spectral\.models\.[^.]+\.check\.(bound|ratio_|local_|looseness|adv_|certified_radius)",
             "skip"),  # one net's Lipschitz bounds and ratios; `holds` is compared
        Rule(r"\.(auc|mannwhitney_u|welch_t|std|worst_ratio|only_arm_wrong|only_plain_wrong)$", "skip"),
        Rule(r"\.(final_diff|mean_diff_by_epoch(\[\d+\])?|ci_low|ci_high)$", "skip"),  # its parts are compared
        Rule(r"\.exact\.(lower|upper|value)\[", "skip"),  # one image's exact distance (n = 1)
        # whether an exact solve ends at its time limit (bounds only) depends on the machine's load, not the code
        Rule(r"\.exact\.proven_bounds_median", "skip"),
        Rule(r"(_p|\.p)$", "p"),
        Rule(r"\.verdict$", "text"),
        Rule(r"epoch", "epoch"),
        Rule(r"\.(seeds_below)$", "count", nearest("seeds")),
        Rule(r"\.(clean_errors_skipped)$", "count", nearest("n_attacked")),
        Rule(r"\.(flipped)$", "count", nearest("pairs")),
        Rule(r"\.(found|compared|optimal)$", "count", nearest("images")),
        Rule(r"\.(added)$", "count", nearest("attacked")),
        Rule(r"(test_error|final_plain|final_pool)(\[\d+\])?$", "rate", const(n_test)),
        Rule(r"curve\.fgsm_error\[", "rate", const(n_test)),
        Rule(r"train_error$", "rate", nearest("n_train", "train_subset", default=lambda r, p: _number(
            r.get("models", {}).get(p[1], {}).get("n_train")))),  # table1's rows: their model's n_train
        Rule(r"\.transfer\.[^.]+$", "rate", nearest("paired_n")),
        Rule(r"\.errors\.[^.]+$", "rate", per_model),
        Rule(r"\.(success_rate|outside_box)$", "rate", attacked),
        Rule(r"\.chance\.\w+\.(mean|p95)$", "mean", nearest("n")),
        Rule(r"\.summary\.\w+\.\w+\.mean$", "rate", nearest("n")),  # a mean purity or coherence (in [0, 1])
        Rule(r"(distortion|distance|certified_rms|certified_median|certified_over_lbfgs|\.median|median_ratio"
             r"|ratio_to_plain|\.sigma)(_all)?(\[\d+\])?$", "mean",
             nearest("n_lbfgs", "n_attacked", "paired_n", "attacked", "images", "n", default=per_model)),
    ]
