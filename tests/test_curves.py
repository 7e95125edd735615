"""experiments.curves: the Student-t interval and the paired curve comparison against answers worked out
independently (scipy.stats.t.interval, hand-computed means), both papers' verdicts as adapters of it, and the probe's
L-BFGS curve leaving out the images the net gets wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from blindspots.attacks import Misclassification, lbfgs_attack
from blindspots.data import ImageSet
from blindspots.experiments.curves import CurveProbe, compare_curves, t_interval
from blindspots.experiments.goodfellow2015.findings import curve_verdict as goodfellow_verdict
from blindspots.experiments.szegedy2014.findings import curve_verdict as szegedy_verdict

# three seeds, four epochs; per epoch, the mean of treated − control is +0.0067, +0.0033, −0.0033, −0.0133:
# the mean treated curve is below from the third epoch on; every seed ends below (−0.02, −0.01, −0.01)
CONTROL = [[0.10, 0.08, 0.06, 0.05], [0.12, 0.07, 0.06, 0.04], [0.11, 0.09, 0.05, 0.06]]
TREATED = [[0.13, 0.07, 0.05, 0.03], [0.10, 0.10, 0.05, 0.03], [0.12, 0.08, 0.06, 0.05]]
FINAL_DIFFS = [-0.02, -0.01, -0.01]


def _scipy_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    return stats.t.interval(level, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))


def test_t_interval_matches_scipy() -> None:
    for values in ([1.0, 2.0, 3.0], FINAL_DIFFS, [0.3, -0.1, 0.25, 0.05, 0.0]):
        assert t_interval(values) == pytest.approx(_scipy_interval(values), rel=1e-12)
    lo, hi = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2 dof) = 4.302653
    assert (lo, hi) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-6)
    assert t_interval([1.0, 2.0, 3.0], level=0.9) == pytest.approx(_scipy_interval([1.0, 2.0, 3.0], 0.9))
    assert t_interval([0.5]) is None and t_interval([]) is None


def test_compare_curves_on_hand_made_curves() -> None:
    c = compare_curves(TREATED, CONTROL, [1, 2, 3, 4])
    assert c.differences == pytest.approx(FINAL_DIFFS)
    assert c.mean_difference == pytest.approx(-0.04 / 3)
    assert c.interval == pytest.approx(_scipy_interval(FINAL_DIFFS))
    assert c.seeds_below == 3 and c.common_epochs == 4
    assert c.mean_diff_by_epoch == pytest.approx([0.02 / 3, 0.01 / 3, -0.01 / 3, -0.04 / 3])
    assert c.below_from == 3
    assert compare_curves(TREATED, CONTROL, [2, 4, 6, 8]).below_from == 6  # the epochs' own labels
    assert compare_curves(CONTROL, TREATED, [1, 2, 3, 4]).below_from is None  # above at the end
    one = compare_curves(TREATED[:1], CONTROL[:1], [1, 2, 3, 4])
    assert one.interval is None and one.below_from == 2 and one.differences == pytest.approx([-0.02])


def test_compare_curves_on_curves_of_different_lengths() -> None:
    # the treated arm of seed 2 stopped after three epochs: the per-epoch comparison uses the three all ran, the
    # final difference each curve's own last point (0.05 − 0.04)
    treated = [TREATED[0], TREATED[1][:3], TREATED[2]]
    c = compare_curves(treated, CONTROL, [1, 2, 3, 4])
    assert c.common_epochs == 3 and c.below_from == 3
    assert c.differences == pytest.approx([-0.02, 0.01, -0.01]) and c.seeds_below == 2
    with pytest.raises(ValueError):
        compare_curves(TREATED[:2], CONTROL, [1, 2, 3, 4])


def test_both_papers_verdicts_read_the_shared_comparison() -> None:
    sz = szegedy_verdict([{"epoch": [1, 2, 3, 4], "test_error": v} for v in CONTROL],
                         [{"epoch": [1, 2, 3, 4], "test_error": v} for v in TREATED])
    assert sz["final_diff"] == pytest.approx(-0.04 / 3) and sz["below_since_epoch"] == 3
    assert (sz["ci_low"], sz["ci_high"]) == pytest.approx(_scipy_interval(FINAL_DIFFS))
    assert sz["final_plain"] == pytest.approx(0.05) and sz["final_pool"] == pytest.approx(0.11 / 3)
    # Goodfellow's pairs the arms by seed (listed in any order) and numbers the retraining epochs from 1
    plain = [{"seed": s, "retrain": {"test_error": v}} for s, v in enumerate(CONTROL)]
    adv = [{"seed": s, "retrain": {"test_error": v}} for s, v in reversed(list(enumerate(TREATED)))]
    gf = goodfellow_verdict(adv, plain)
    assert gf["seeds"] == [2, 1, 0] and gf["differences"] == pytest.approx(FINAL_DIFFS[::-1])
    assert gf["ci95"] == pytest.approx(list(_scipy_interval(FINAL_DIFFS)))
    assert gf["below_from_epoch"] == 3 and gf["ends_below"] and gf["seeds_below"] == 3
    one = goodfellow_verdict(adv[-1:], plain)
    assert one["ci95"] is None and one["n"] == 1


def test_probe_leaves_out_what_the_net_gets_wrong() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(24, 1, 4, 4)
    y = model(x).argmax(dim=1)
    y[::3] = (y[::3] + 1) % 3  # every third image is misclassified
    test = ImageSet(x, y, "toy", "test", np.arange(24), {})
    options = {"search_steps": 2, "bracket_steps": 2, "max_iter": 20}
    probe = CurveProbe(test, eps=0.1, n_lbfgs=12, lbfgs=options, n_fgsm=6)
    m = probe.measure(model)
    assert m["test_error"] == pytest.approx(8 / 24)
    assert 2 / 6 <= m["fgsm_error"] <= 1
    right = (model(x[:12]).argmax(dim=1) == y[:12])
    res = lbfgs_attack(model, x[:12][right], Misclassification(y[:12][right]), **options)
    assert bool(res.success.all())
    assert m["lbfgs_distortion"] == pytest.approx(float(res.rms.mean()), rel=1e-6)


def test_curves_probed_every_few_epochs_and_mcnemar() -> None:
    """Curves probed every other epoch (None between, the last epoch always) compare on the probed epochs only;
    McNemar counts the images only one arm gets wrong and gives scipy's exact binomial p-value."""
    from blindspots.experiments.curves import mcnemar

    sparse = [[v if i % 2 == 1 or i == 3 else None for i, v in enumerate(c)] for c in TREATED]
    c = compare_curves(sparse, CONTROL, [1, 2, 3, 4])
    assert c.differences == pytest.approx(FINAL_DIFFS) and c.below_from == 4  # epoch 3 unprobed, epoch 2 above
    control = torch.tensor([True, True, True, False, False, True, False, True])
    treated = torch.tensor([True, False, False, False, True, False, False, False])
    m = mcnemar(control, treated)
    assert (m["only_control_wrong"], m["only_treated_wrong"]) == (4, 1)
    assert m["p"] == pytest.approx(stats.binomtest(1, 5, 0.5).pvalue) and m["p"] == pytest.approx(0.375)
    assert mcnemar(control, control)["p"] == 1.0
