"""blindspots.verify against an independent ground truth: on random 2-D ReLU and maxout nets the exact minimal L∞, L1
and L2 distance is enumerated here (tests/planar.py: the box split into the net's linear regions, closed-form
distances, plain numpy), so that the bracket certified ≤ exact = truth and lower ≤ truth is checked against a number
no solver produced; an unsound certified radius injected into the exact program must be FLAGged, not absorbed."""

from __future__ import annotations

import copy

import pytest
import torch
from planar import minimal_distance, random_net, regions

from blindspots.verify import certified_radius, exact_minimal

pytestmark = pytest.mark.usefixtures("one_thread")
NORMS = ("linf", "l1", "l2")
REL_GAP = 1e-4


def points(net: torch.nn.Module, seed: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """n clean points drawn in the middle of the box, labelled by the net (correct by construction)."""
    x = 0.2 + 0.6 * torch.rand(n, 2, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, net(x).argmax(1)


def truth(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    parts = regions(net)
    return torch.tensor([minimal_distance(parts, xi.double().numpy(), int(yi), norm)[0] for xi, yi in zip(x, y)],
                        dtype=torch.float64)


@pytest.mark.parametrize("kind", ["relu", "maxout"])
def test_enumeration_is_exact_where_sampling_can_tell(kind: str) -> None:
    """The enumerator's closest point is adversarial at the distance it states, and no adversarial input among
    20,000 random ones in the box lies closer: the truth below is checked without any solver."""
    for seed in (0, 1):
        net = random_net(kind, seed)
        parts = regions(net)
        assert len(parts) >= 15  # a net with many linear regions in the box
        x, y = points(net, seed)
        sample = torch.rand(20000, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        with torch.no_grad():
            net64 = copy.deepcopy(net).double()
            wrong = net64(sample).argmax(1)[None] != y[:, None]  # [points, samples]
            for norm in NORMS:
                for i in range(len(y)):
                    d, p = minimal_distance(parts, x[i].double().numpy(), int(y[i]), norm)
                    at = torch.from_numpy(p)
                    diff = at - x[i].double()
                    stated = {"linf": diff.abs().max(), "l1": diff.abs().sum(), "l2": diff.norm()}[norm]
                    assert float(stated) == pytest.approx(d, abs=1e-12)
                    logits = net64(at[None])[0]
                    assert float(torch.cat([logits[:y[i]], logits[y[i] + 1:]]).max() - logits[y[i]]) >= -1e-9
                    gaps = sample[wrong[i]] - x[i].double()
                    dist = {"linf": gaps.abs().amax(1), "l1": gaps.abs().sum(1), "l2": gaps.norm(dim=1)}[norm]
                    assert float(dist.min()) >= d - 1e-12


@pytest.mark.parametrize("kind", ["relu", "maxout"])
def test_certified_le_exact_eq_truth(kind: str) -> None:
    """Three points, three norms: every certified radius (IBP, CROWN, α-CROWN) ≤ the truth, the exact value = the
    truth to the solver's gap, lower ≤ truth, no FLAG with the radius cut checked by a second solve without it."""
    for seed in (0,):
        net = random_net(kind, seed)
        x, y = points(net, seed)
        for norm in NORMS:
            true = truth(net, x, y, norm)
            assert bool(torch.isfinite(true).all())
            for method in ("ibp", "crown", "alpha-crown"):
                radius = certified_radius(net, x, y, norm=norm, method=method, steps=10, alpha_steps=5)
                assert bool((radius <= true + 1e-12).all()), (norm, method)
                assert method == "ibp" or bool((radius > 0).all()), (norm, method)
            r = exact_minimal(net, x, y, norm=norm, time_limit=60, rel_gap=REL_GAP, check=True)
            assert r.status == ["optimal"] * len(y) and r.flags == [""] * len(y), (norm, r.flags)
            assert bool((r.lower <= true).all()), (norm, r.lower - true)
            assert bool(((r.value - true).abs() <= REL_GAP * true + 1e-6).all()), (norm, r.value - true)
            assert bool((r.radius <= r.lower).all() and (r.lower <= r.value).all())


def test_review_l2_case_lower_bound_is_below_the_truth() -> None:
    """A maxout net whose L2 minimum (0.0361) is below ~0.07, where SCIP's default feasibility tolerance inflated
    the point's distance and the old `lower = value·(1 − gap)` landed above the truth (0.036141 > 0.0361325)."""
    net = random_net("maxout", 1)
    x, y = points(net, 1)
    x, y = x[1:2], y[1:2]
    true = truth(net, x, y, "l2")
    assert float(true[0]) < 0.07
    r = exact_minimal(net, x, y, norm="l2", time_limit=60, rel_gap=REL_GAP)
    assert r.status == ["optimal"] and r.flags == [""]
    assert float(r.lower[0]) <= float(true[0])
    assert float(r.value[0]) == pytest.approx(float(true[0]), rel=REL_GAP)
    dist = float((r.x_adv[0] - x[0].double()).norm())  # the value is the re-verified point's own distance
    assert float(r.value[0]) == dist


@pytest.mark.parametrize("kind", ["relu", "maxout"])
def test_unsound_radius_is_flagged(kind: str) -> None:
    """A radius cut at 1.3× the truth is FLAGged (no incumbent, so the cut is all that is wrong; the check solve
    without the cut finds the truth below it); a sound one at 0.9× the truth passes unflagged to the exact value
    (a second net against the truth, with the attacks' incumbents)."""
    net = random_net(kind, 1)
    x, y = points(net, 1)
    for norm in NORMS:
        true = truth(net, x, y, norm)
        bad = exact_minimal(net, x, y, norm=norm, radius=1.3 * true, attack=False, check=True)
        assert all("radius is unsound" in f for f in bad.flags), (norm, bad.flags)
        good = exact_minimal(net, x, y, norm=norm, radius=0.9 * true)
        assert good.flags == [""] * len(y) and good.status == ["optimal"] * len(y), (norm, good.flags)
        assert bool(((good.value - true).abs() <= REL_GAP * true + 1e-6).all())
        assert bool((good.lower >= 0.9 * true).all() and (good.lower <= true).all())


def test_time_limit_keeps_the_certified_radius_as_lower_bound() -> None:
    """Stopped before its root LP the solver proves nothing; the certified radius computed before it still holds."""
    net = random_net("relu", 0)
    x, y = points(net, 0)
    r = exact_minimal(net, x, y, norm="linf", time_limit=1e-6)
    true = truth(net, x, y, "linf")
    assert bool((r.lower >= r.radius).all() and (r.radius > 0).all() and (r.lower <= true).all())
    assert bool((r.upper >= true).all())


@pytest.mark.parametrize("norm", NORMS)
def test_nudge_crosses_the_tie_with_a_pinned_coordinate(norm: str) -> None:
    """A point 1e-9 logits on the label's side of a tie, its steepest coordinate pinned at the box's side: the nudge
    moves the other coordinate, by about 1e-9, onto the adversarial side (the forward pass needs no tolerance)."""
    from blindspots.verify.network import network
    from blindspots.verify.polish import margin, nudge

    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():  # logit_1 − logit_0 = 2·x0 + x1 − 2.5
        lin.weight.copy_(torch.tensor([[0.0, 0.0], [2.0, 1.0]]))
        lin.bias.copy_(torch.tensor([0.0, -2.5]))
    net = network(torch.nn.Sequential(lin), (2,))
    point = torch.tensor([1.0, 0.5 - 1e-9], dtype=torch.float64)
    assert margin(net, point, 0) > 0
    moved = nudge(net, point.clone(), 0, point, norm, (0.0, 1.0))
    assert margin(net, moved, 0) <= 0 and float(moved[0]) == 1.0
    assert 0 < float(moved[1] - point[1]) < 1e-8
