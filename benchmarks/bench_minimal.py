"""Minimal untargeted L2 adversarial examples: ours against the peers, side by side in one run.

For each model (trained on full MNIST by `blindspots.train`, or reused from the store), the first N test
images the model classifies correctly (clean errors are counted and left out) are attacked by:

  ours        blindspots.attacks.minimal.minimal_l2_attack (boundary projection, defaults)
  lbfgs       blindspots.attacks.lbfgs_attack, untargeted (our previous minimal attack; --methods to add it)
  ddn         adv_lib 0.2.8 DDN, 1000 steps (the DDN paper's MNIST setting; levels=256 as adv_lib's default)
  alma        adv_lib 0.2.8 ALMA, 1000 steps, penalty P2, its defaults otherwise
  fab         adv_lib 0.2.8 FAB (L2, 100 iterations, its defaults)
  cw          adv_lib 0.2.8 Carlini-Wagner L2 (9 search steps x --cw-steps iterations, abort early)
  fb-fmn      Foolbox 3.3.4 L2 FMN (100 steps), fb-deepfool: Foolbox 3.3.4 L2 DeepFool (50 steps)

Every x_adv is judged by a fresh forward pass here (`predict_logits`), clipped to nothing: a method whose
output leaves [0, 1] is flagged. Printed per model: success rate, median L2 over the images every method
succeeded on and over all images (failures as inf), wall time, and ours against the best peer (the peer
with the lowest median over all images): the ratio of medians, per-image ratio quantiles, the time ratio.
For ours and lbfgs also the model's forward and backward passes per image (`result.passes_per_image()`,
counted by the attack entry point): the cost independent of the machine.

Everything runs single-threaded (OMP_NUM_THREADS=1, torch.set_num_threads(1)) so that the comparison is
per core and fair on a shared machine. The peers are an optional extra: pip install -e '.[peers]'
(adv-lib with --no-deps; its visdom and torchvision imports serve features not used here and are stubbed).

    python benchmarks/bench_minimal.py                  # 4 models x 500 images
    python benchmarks/bench_minimal.py --n 100 --models FC100-100-10 --methods ours,ddn,alma
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from blindspots.attacks import Misclassification, lbfgs_attack  # noqa: E402
from blindspots.attacks.minimal import minimal_l2_attack  # noqa: E402
from blindspots.data import load_mnist  # noqa: E402
from blindspots.models import predict_logits, train  # noqa: E402

MODELS = ("FC100-100-10", "FC200-200-10", "AE400-10", "CNN")
METHODS = ("ours", "ddn", "alma", "fab", "cw", "fb-fmn", "fb-deepfool")
Attack = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
PASSES: dict[str, tuple[float, float]] = {}  # ours and lbfgs: model passes per image (forward, backward)


def stub_peer_imports() -> None:
    """adv_lib imports visdom (live plots) and torchvision (perceptual distances) at import time; neither is
    used by the attacks run here, so empty modules stand in when they are not installed."""
    for name in ("visdom", "torchvision", "torchvision.models", "torchvision.transforms"):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
    if not hasattr(sys.modules["visdom"], "Visdom"):
        sys.modules["visdom"].Visdom = object  # type: ignore[attr-defined]


def attacks(cw_steps: int) -> dict[str, Attack]:
    """Every method as f(model, x, y) -> x_adv; peers are imported only when asked for."""
    def ours(model, x, y):
        res = minimal_l2_attack(model, x, Misclassification(y))
        PASSES["ours"] = res.passes_per_image()
        return res.x_adv

    def lbfgs(model, x, y):
        res = lbfgs_attack(model, x, Misclassification(y))
        PASSES["lbfgs"] = res.passes_per_image()
        return res.x_adv

    def adv_lib(name: str, **kw):
        def run(model, x, y):
            stub_peer_imports()
            import adv_lib.attacks as A
            from adv_lib.utils.lagrangian_penalties import all_penalties
            if name == "alma":
                kw.setdefault("penalty", all_penalties["P2"])
            return getattr(A, name)(model, x, y, **kw)
        return run

    def foolbox(name: str, **kw):
        def run(model, x, y):
            import foolbox as fb
            fmodel = fb.PyTorchModel(model, bounds=(0, 1))
            attack = getattr(fb.attacks, name)(**kw)
            _, adv, _ = attack(fmodel, x, y, epsilons=None)
            return adv
        return run

    return {"ours": ours, "lbfgs": lbfgs, "ddn": adv_lib("ddn", steps=1000), "alma": adv_lib("alma", num_steps=1000),
            "fab": adv_lib("fab", norm=2), "cw": adv_lib("carlini_wagner_l2", max_iterations=cw_steps),
            "fb-fmn": foolbox("L2FMNAttack", steps=100), "fb-deepfool": foolbox("L2DeepFoolAttack", steps=50)}


def quantiles(t: torch.Tensor, qs: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)) -> str:
    t = t[torch.isfinite(t)]
    if not t.numel():
        return "n/a"
    return " ".join(f"{float(v):.3f}" for v in torch.quantile(t.double(), torch.tensor(qs, dtype=torch.float64)))


def bench_model(spec: str, n: int, methods: list[str], table: dict[str, Attack]) -> None:
    model = train(spec).model.eval()
    for p in model.parameters():  # no method needs parameter gradients
        p.requires_grad_(False)
    data = load_mnist("test", subset=n)
    right = predict_logits(model, data.images).argmax(1) == data.labels
    x, y = data.images[right], data.labels[right]
    print(f"\n{spec}: first {n} test images, {int((~right).sum())} clean errors left out, {x.shape[0]} attacked")
    l2s: dict[str, torch.Tensor] = {}
    times: dict[str, float] = {}
    for name in methods:
        t0 = time.perf_counter()
        adv = table[name](model, x.clone(), y.clone()).detach().reshape(x.shape)
        times[name] = time.perf_counter() - t0
        in_box = bool((adv >= 0).all() and (adv <= 1).all())
        success = predict_logits(model, adv).argmax(1) != y
        dist = (adv - x).flatten(1).norm(dim=1)
        l2s[name] = torch.where(success & torch.tensor(in_box), dist, torch.full_like(dist, math.inf))
        note = "" if in_box else "   (x_adv leaves [0, 1]: counted as failures)"
        print(f"  ran {name:12s} {times[name]:8.1f} s{note}", flush=True)
    common = torch.stack([torch.isfinite(v) for v in l2s.values()]).all(0)
    print(f"  {'method':12s}{'success':>9s}{'median L2':>11s}{'(common)':>10s}{'mean L2':>9s}{'time s':>9s}"
          f"{'fwd/img':>9s}{'bwd/img':>9s}")
    for name in methods:
        v = l2s[name]
        ok = torch.isfinite(v)
        mean = float(v[ok].mean()) if ok.any() else math.nan
        fwd, bwd = (f"{p:9.1f}" for p in PASSES[name]) if name in PASSES else (f"{'-':>9s}",) * 2
        print(f"  {name:12s}{float(ok.float().mean()):9.3f}{float(v.median()):11.4f}{float(v[common].median()):10.4f}"
              f"{mean:9.4f}{times[name]:9.1f}{fwd}{bwd}")
    peers = [m for m in methods if m not in ("ours", "lbfgs")]
    if "ours" not in methods or not peers:
        return
    best = min(peers, key=lambda m: (float(l2s[m].median()), times[m]))
    ratio = l2s["ours"] / l2s[best]
    print(f"  best peer {best}: ours/best median {float(l2s['ours'].median()) / float(l2s[best].median()):.4f} "
          f"(goal <= 1), time ratio {times['ours'] / times[best]:.3f} (goal <= 1)")
    print(f"  per-image L2 ours/{best}, quantiles 5/25/50/75/95%: {quantiles(ratio)}; ours smaller on "
          f"{float((ratio < 0.999).float().mean()):.1%}, larger on {float((ratio > 1.001).float().mean()):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="test images per model (default 500)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS), help=f"from ours, lbfgs, {', '.join(METHODS[1:])}")
    parser.add_argument("--cw-steps", type=int, default=1000, help="C&W iterations per search step (default 1000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = attacks(args.cw_steps)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in table]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(table)}")
    print(f"minimal untargeted L2, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"wall times are per core on this (possibly shared) machine")
    for spec in args.models.split(","):
        bench_model(spec, args.n, methods, table)


if __name__ == "__main__":
    main()
