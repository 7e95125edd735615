"""Is a single unit special? (Szegedy et al. 2014, §3), measured rather than only shown.

For a layer with activations φ(x) ∈ R^D we compare K natural-basis directions e_i (single units) with K random
unit directions v (Gaussian, normalised, seeded). For each direction the top-k held-out images maximising
⟨φ(x), direction⟩ are found, and their semantic coherence is scored by two model-independent measures:

- label purity: the share of the most common true label among the k images (chance: random k-image sets);
- pixel coherence: the mean pairwise cosine similarity of the k images' raw pixel vectors, i.e. how alike
  the images look, independent of the model whose directions chose them (chance: random k-image sets).

Both kinds are summarised by mean ± std; a two-sided Mann–Whitney U test (primary) and Welch's t-test compare
units with random directions on each measure. Units and random directions count as told apart when a
Mann–Whitney p-value is below α/2 (Bonferroni over the two measures, α = 0.05); a p-value above it means this
test cannot tell them apart with this many directions, not that they are proven equal.

A direction whose k-th and (k+1)-th best images tie has no well-defined top-k (a dead ReLU unit, or one that
fires on fewer than k images): it is left out of the statistics and listed in `ambiguous_units` /
`ambiguous_random`. Activations are computed in float64 so that saturated sigmoids do not tie.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from ..errors import InputError

ALPHA = 0.05
MEASURES = ("purity", "coherence")


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every module of the model (for `layer_activations` and error messages)."""
    return [name for name, _ in model.named_modules() if name]


def default_layers(model: nn.Module) -> list[str]:
    """The fully connected hidden layers: each activation whose nearest earlier non-dropout layer is a Linear,
    and each Maxout layer (CNN: relu3; FC100-100-10: act1, act2; MAXOUT: maxout1, maxout2)."""
    from ..models.zoo import Maxout
    from .spectral import sequential_layers

    names: list[str] = []
    previous: nn.Module | None = None
    for name, module in sequential_layers(model):
        is_activation = (type(module).__module__ == nn.ReLU.__module__
                         and not isinstance(module, (nn.Softmax, nn.LogSoftmax)))
        if isinstance(module, Maxout) or (is_activation and isinstance(previous, nn.Linear)):
            names.append(name)
        if not isinstance(module, nn.modules.dropout._DropoutNd):
            previous = module
    return names


@torch.no_grad()
def layer_activations(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 1000,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """φ(x): the output of module `layer` for each image, flattened to [N, D] (eval mode, in batches).

    Computed on a `dtype` copy of the model (float64 by default): in float32 a saturated sigmoid unit reads
    exactly 1.0 on hundreds of images, and its top-k would be an arbitrary pick among ties."""
    try:
        model.get_submodule(layer)
    except AttributeError:
        raise InputError(f"model has no layer {layer!r}; its layers are: {', '.join(layer_names(model))}") from None
    device = next(model.parameters()).device
    work = copy.deepcopy(model).to(dtype=dtype).eval()
    captured: list[torch.Tensor] = []
    work.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: captured.append(out.detach().flatten(1).cpu()))
    for i in range(0, images.shape[0], batch_size):
        work(images[i:i + batch_size].to(device, dtype))
    return torch.cat(captured)


def top_k_images(activations: torch.Tensor, directions: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [K, k] of the k images with the largest ⟨φ(x), d⟩ for each of the K rows d of `directions`,
    best first."""
    if activations.dim() != 2 or directions.dim() != 2 or activations.shape[1] != directions.shape[1]:
        raise InputError(f"activations [N, D] and directions [K, D] must share D; got {tuple(activations.shape)} "
                         f"and {tuple(directions.shape)}")
    if not 1 <= k <= activations.shape[0]:
        raise InputError(f"k must be between 1 and the number of images ({activations.shape[0]}), got {k}")
    scores = activations.double() @ directions.double().T  # [N, K]
    return scores.topk(k, dim=0).indices.T.contiguous()


def ambiguous_top_k(activations: torch.Tensor, directions: torch.Tensor, k: int) -> torch.Tensor:
    """Per direction, whether its top-k set is not unique: the k-th and (k+1)-th largest scores tie (a dead unit,
    or one that fires on fewer than k images)."""
    scores = activations.double() @ directions.double().T
    values = scores.topk(min(k + 1, scores.shape[0]), dim=0).values
    if values.shape[0] <= k:
        return torch.zeros(directions.shape[0], dtype=torch.bool)
    return values[k - 1] == values[k]


def label_purity(labels: torch.Tensor, index_sets: torch.Tensor) -> np.ndarray:
    """Per row of `index_sets` [K, k]: the share of the most common label among those images."""
    chosen = labels[index_sets]  # [K, k]
    counts = torch.zeros(chosen.shape[0], int(labels.max()) + 1, dtype=torch.long)
    counts.scatter_add_(1, chosen, torch.ones_like(chosen))
    return (counts.amax(dim=1).double() / index_sets.shape[1]).numpy()


def pixel_coherence(images: torch.Tensor, index_sets: torch.Tensor) -> np.ndarray:
    """Per row of `index_sets` [K, k]: mean pairwise cosine similarity of those images' pixel vectors."""
    unit = torch.nn.functional.normalize(images.flatten(1).double(), dim=1)
    k = index_sets.shape[1]
    if k < 2:
        raise InputError("pixel coherence needs k >= 2 images per direction")
    sums = unit[index_sets].sum(dim=1)  # [K, P]; ‖Σu‖² = k + Σ_{i≠j} cos
    return ((sums.square().sum(dim=1) - k) / (k * (k - 1))).numpy()


def _describe(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": int(len(values))}


def _compare(units: np.ndarray, random: np.ndarray) -> dict[str, float]:
    mw = stats.mannwhitneyu(units, random, alternative="two-sided")
    welch = stats.ttest_ind(units, random, equal_var=False)
    return {"mannwhitney_u": float(mw.statistic), "mannwhitney_p": float(mw.pvalue),
            "auc": float(mw.statistic) / (len(units) * len(random)),  # P(unit > random), ties count half
            "welch_t": float(welch.statistic), "welch_p": float(welch.pvalue)}


@dataclass
class UnitAnalysis:
    """Top-k images and coherence scores of single units versus random directions in one layer.

    Arrays over directions are aligned with `unit_ids` / `random_directions`; `*_topk` hold indices into the
    images the analysis was run on, best first. `chance` is the same measures over random k-image sets.
    """

    layer: str
    width: int
    k: int
    n_images: int
    seed: int
    unit_ids: np.ndarray
    random_ids: np.ndarray
    random_directions: np.ndarray
    unit_topk: np.ndarray
    random_topk: np.ndarray
    unit_purity: np.ndarray
    random_purity: np.ndarray
    unit_coherence: np.ndarray
    random_coherence: np.ndarray
    chance: dict[str, dict[str, float]]
    ambiguous_units: list[int]
    ambiguous_random: list[int]
    summary: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    tests: dict[str, dict[str, float]] = field(default_factory=dict)
    told_apart: bool = False
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (arrays as lists)."""
        keep = ("layer", "width", "k", "n_images", "seed", "chance", "ambiguous_units", "ambiguous_random",
                "summary", "tests", "told_apart", "verdict")
        out: dict[str, Any] = {key: getattr(self, key) for key in keep}
        out["alpha"] = ALPHA
        for key in ("unit_ids", "random_ids", "unit_topk", "random_topk", "unit_purity", "random_purity",
                    "unit_coherence", "random_coherence"):
            out[key] = np.asarray(getattr(self, key)).tolist()
        return out


def _verdict(a: UnitAnalysis, model_name: str) -> tuple[bool, str]:
    threshold = ALPHA / len(MEASURES)
    parts, apart = [], False
    for measure, label in zip(MEASURES, ("label purity", "pixel coherence")):
        s, t = a.summary[measure], a.tests[measure]
        significant = t["mannwhitney_p"] < threshold
        apart |= significant
        higher = "units higher" if s["units"]["mean"] > s["random"]["mean"] else "random higher"
        parts.append(f"{label} {s['units']['mean']:.3f} ± {s['units']['std']:.3f} (units) vs "
                     f"{s['random']['mean']:.3f} ± {s['random']['std']:.3f} (random), Mann–Whitney "
                     f"p = {t['mannwhitney_p']:.3g}" + (f", {higher}" if significant else ""))
    chance = a.chance
    above = [kind for kind in ("units", "random")
             if all(a.summary[m][kind]["mean"] > chance[m]["p95"] for m in MEASURES)]
    head = (f"On {model_name}, layer {a.layer} ({a.width} dims, top-{a.k} of {a.n_images} test images, "
            f"{a.summary['purity']['units']['n']} units vs {a.summary['purity']['random']['n']} random directions): ")
    if apart:
        head += f"single units and random directions CAN be told apart at α = {ALPHA} (Bonferroni over 2 measures)"
    else:
        head += (f"single units and random directions can NOT be told apart at α = {ALPHA} (Bonferroni over "
                 "2 measures)")
    tail = (f"Chance level of random {a.k}-image sets: purity {chance['purity']['mean']:.3f}, coherence "
            f"{chance['coherence']['mean']:.3f}; mean of both measures above chance's 95th percentile for: "
            f"{' and '.join(above) if above else 'neither kind'}.")
    if a.ambiguous_units or a.ambiguous_random:
        tail += (f" Left out for a tied top-{a.k} (dead or rarely active): {len(a.ambiguous_units)} units, "
                 f"{len(a.ambiguous_random)} random directions.")
    return apart, head + " — " + "; ".join(parts) + ". " + tail


def unit_analysis(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor, k: int = 8,
                  n_directions: int = 100, seed: int = 0, n_chance: int = 2000,
                  model_name: str | None = None) -> UnitAnalysis:
    """Compare single units of `layer` with random directions by the coherence of their top-k images.

    `n_directions` units are drawn without replacement (all of them if the layer is narrower) and as many random
    unit-norm directions; both draws and the chance-level k-sets come from `seed`.
    """
    if images.shape[0] != labels.shape[0]:
        raise InputError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if k < 2 or n_directions < 2:
        raise InputError(f"need k >= 2 and n_directions >= 2 for the statistics, got k={k}, "
                         f"n_directions={n_directions}")
    acts = layer_activations(model, layer, images)
    n, width = acts.shape
    gen = torch.Generator().manual_seed(seed)
    unit_ids = torch.randperm(width, generator=gen)[:n_directions].sort().values
    directions = torch.randn(n_directions, width, generator=gen, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)

    eye = torch.eye(width, dtype=torch.float64)
    unit_tied = ambiguous_top_k(acts, eye[unit_ids], k)
    random_tied = ambiguous_top_k(acts, directions, k)
    live, random_ids = unit_ids[~unit_tied], torch.arange(n_directions)[~random_tied]
    if len(live) < 2:
        raise InputError(f"layer {layer!r} has fewer than 2 units with a well-defined top-{k} on these images "
                         "(dead units?); choose another layer")
    unit_topk = top_k_images(acts, eye[live], k)
    random_topk = top_k_images(acts, directions[random_ids], k)
    chance_sets = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(n_chance)])

    labels = labels.cpu().long()
    images = images.cpu()
    a = UnitAnalysis(
        layer=layer, width=width, k=k, n_images=n, seed=seed, unit_ids=live.numpy(),
        random_ids=random_ids.numpy(), random_directions=directions[random_ids].numpy(),
        unit_topk=unit_topk.numpy(), random_topk=random_topk.numpy(),
        unit_purity=label_purity(labels, unit_topk), random_purity=label_purity(labels, random_topk),
        unit_coherence=pixel_coherence(images, unit_topk), random_coherence=pixel_coherence(images, random_topk),
        chance={}, ambiguous_units=unit_ids[unit_tied].tolist(),
        ambiguous_random=random_tied.nonzero()[:, 0].tolist())
    for measure, fn in (("purity", lambda s: label_purity(labels, s)),
                        ("coherence", lambda s: pixel_coherence(images, s))):
        values = fn(chance_sets)
        a.chance[measure] = {**_describe(values), "p95": float(np.quantile(values, 0.95))}
        units, random = getattr(a, f"unit_{measure}"), getattr(a, f"random_{measure}")
        a.summary[measure] = {"units": _describe(units), "random": _describe(random)}
        a.tests[measure] = _compare(units, random)
    a.told_apart, a.verdict = _verdict(a, model_name or type(model).__name__)
    return a
