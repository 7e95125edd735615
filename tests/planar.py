"""An exact minimal adversarial distance for 2-D ReLU and maxout nets, independent of blindspots.verify: plain numpy,
no LP solver, no bound.

The input box is split into the convex polygons on which the net is affine (one per ReLU on/off pattern and maxout
argmax choice, by recursive halfplane clipping); each polygon is clipped once more by logit_j ≥ logit_y for every
other class j (a tie counts as adversarial: the closed set); the distance from the clean point to a convex polygon
is closed-form (0 inside, else the nearest boundary segment: the projection for L2, the best breakpoint of a convex
piecewise-linear function for L∞ and L1). The minimum over all polygons is the exact minimal distance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from blindspots.models.zoo import Maxout

Region = tuple[np.ndarray, np.ndarray, np.ndarray]  # (polygon vertices [k, 2], A [m, 2], c [m]): values A·x + c


def clip(poly: np.ndarray, a: np.ndarray, c: float) -> np.ndarray:
    """The convex polygon ∩ {x : a·x + c ≥ 0} (Sutherland–Hodgman against one halfplane)."""
    f = poly @ a + c
    if (f >= 0).all():
        return poly
    if (f < 0).all():
        return poly[:0]
    out = []
    for i in range(len(poly)):
        p, q, fp, fq = poly[i], poly[(i + 1) % len(poly)], f[i], f[(i + 1) % len(poly)]
        if fp >= 0:
            out.append(p)
        if (fp >= 0) != (fq >= 0):
            out.append(p + (fp / (fp - fq)) * (q - p))
    return np.array(out).reshape(-1, 2)


def area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(x @ np.roll(y, -1) - y @ np.roll(x, -1)))


def _keep(poly: np.ndarray) -> bool:
    return area(poly) > 1e-15


def _relu(regions: list[Region]) -> list[Region]:
    for unit in range(regions[0][1].shape[0]):
        out = []
        for poly, a, c in regions:
            for sign in (1.0, -1.0):
                part = clip(poly, sign * a[unit], sign * c[unit])
                if _keep(part):
                    a2, c2 = a.copy(), c.copy()
                    if sign < 0:
                        a2[unit], c2[unit] = 0.0, 0.0
                    out.append((part, a2, c2))
        regions = out
    return regions


def _maxout(regions: list[Region], units: int, pieces: int) -> list[Region]:
    """Values [units·pieces] (unit-major) -> [units]: each region split by which piece is the maximum."""
    out = []
    for poly, a, c in regions:
        cells = [(poly, np.zeros((0, 2)), np.zeros(0))]
        for u in range(units):
            rows = range(u * pieces, (u + 1) * pieces)
            nxt = []
            for cell, ca, cc in cells:
                for k in rows:
                    part = cell
                    for m in rows:
                        if m != k and len(part):
                            part = clip(part, a[k] - a[m], c[k] - c[m])
                    if _keep(part):
                        nxt.append((part, np.vstack([ca, a[k]]), np.r_[cc, c[k]]))
            cells = nxt
        out += cells
    return out


def regions(model: nn.Sequential, bounds: tuple[float, float] = (0.0, 1.0)) -> list[Region]:
    """The box split into the polygons on which the model's logits are affine: [(polygon, A [C, 2], c [C])]."""
    lo, hi = bounds
    box = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], dtype=np.float64)
    out: list[Region] = [(box, np.eye(2), np.zeros(2))]
    for layer in model:
        if isinstance(layer, nn.Linear):
            w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
            out = [(p, w @ a, w @ c + b) for p, a, c in out]
        elif isinstance(layer, nn.ReLU):
            out = _relu(out)
        elif isinstance(layer, Maxout):
            w, b = layer.linear.weight.detach().double().numpy(), layer.linear.bias.detach().double().numpy()
            out = _maxout([(p, w @ a, w @ c + b) for p, a, c in out], layer.units, layer.pieces)
        else:
            raise TypeError(f"planar enumeration takes Linear, ReLU and Maxout layers, not {type(layer).__name__}")
    return out


def _segment(x0: np.ndarray, p: np.ndarray, q: np.ndarray, norm: str) -> tuple[float, np.ndarray]:
    """(distance, nearest point) from x0 to the segment [p, q]."""
    r, d = p - x0, q - p
    if norm == "l2":
        t = np.clip(-(r @ d) / (d @ d), 0.0, 1.0) if d @ d > 0 else 0.0
        ts = np.array([t])
    else:  # convex piecewise linear in t: its minimum is at an end or a breakpoint
        cand = [0.0, 1.0]
        for k in range(2):
            if d[k] != 0:
                cand.append(-r[k] / d[k])
        if norm == "linf":
            for s in (1.0, -1.0):  # r0 + t d0 = s (r1 + t d1)
                den = d[0] - s * d[1]
                if den != 0:
                    cand.append((s * r[1] - r[0]) / den)
        ts = np.clip(np.array(cand), 0.0, 1.0)
    pts = p + ts[:, None] * d
    diff = pts - x0
    dist = np.linalg.norm(diff, axis=1) if norm == "l2" else (np.abs(diff).max(1) if norm == "linf"
                                                              else np.abs(diff).sum(1))
    i = int(dist.argmin())
    return float(dist[i]), pts[i]


def polygon_distance(x0: np.ndarray, poly: np.ndarray, norm: str) -> tuple[float, np.ndarray]:
    """(distance, nearest point) from x0 to a convex polygon (0 where x0 lies inside or on it)."""
    if len(poly) == 1:
        return _segment(x0, poly[0], poly[0], norm)
    edges = np.roll(poly, -1, axis=0) - poly
    cross = edges[:, 0] * (x0[1] - poly[:, 1]) - edges[:, 1] * (x0[0] - poly[:, 0])
    if len(poly) >= 3 and ((cross >= 0).all() or (cross <= 0).all()):
        return 0.0, x0.copy()
    return min((_segment(x0, poly[i], poly[(i + 1) % len(poly)], norm) for i in range(len(poly))),
               key=lambda r: r[0])


def minimal_distance(parts: list[Region], x0: np.ndarray, y: int, norm: str) -> tuple[float, np.ndarray]:
    """(the exact minimal `norm` distance from x0 to an input whose logit of another class reaches y's, the point)."""
    best, arg = math.inf, np.full(2, math.nan)
    for poly, a, c in parts:
        for j in range(a.shape[0]):
            if j == y:
                continue
            part = clip(poly, a[j] - a[y], c[j] - c[y])
            if len(part):
                d, p = polygon_distance(x0, part, norm)
                if d < best:
                    best, arg = d, p
    return best, arg


def random_net(kind: str, seed: int, classes: int = 3) -> nn.Sequential:
    """A small random 2-D net as the zoo builds them: "relu" 2-8-8-C, or "maxout" 2-(6 units × 3 pieces)-C."""
    torch.manual_seed(seed)
    if kind == "relu":
        net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, classes))
    else:
        net = nn.Sequential(Maxout(2, 6, 3), nn.Linear(6, classes))
    with torch.no_grad():  # first-layer lines through the box, so that the box holds many regions
        first = net[0] if kind == "relu" else net[0].linear
        first.weight.mul_(4.0)
        first.bias.copy_(-(first.weight @ torch.rand(first.weight.shape[1], first.weight.shape[0])).diagonal())
        net[-1].bias.sub_(net(torch.full((1, 2), 0.5))[0])  # every class's logit 0 at the centre: all classes show
    return net.eval()
