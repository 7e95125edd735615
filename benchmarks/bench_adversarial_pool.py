"""Cost of §4.2 training on adversarial pools: one epoch of our `train_with_pool` against a hand-written torch loop
of the same computation (same minibatches, the same `lbfgs_attack` calls on the same weights, same pools, same loss),
and one plain `fit` epoch against its hand-written loop, alternated R times in one run (medians, so load from
other processes hits both alike). The loops must end on the very same weights (checked), so the ratio is overhead.

    python benchmarks/bench_adversarial_pool.py [--subset N] [--repeats R] [--layers input,act1,act2] [--threads T]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from blindspots.attacks import Misclassification, lbfgs_attack
from blindspots.data import load_mnist
from blindspots.models import build_model, default_recipe, fit
from blindspots.training.pool import PoolConfig, train_with_pool

SPEC = "FC100-100-10"


def hand_loop(x: torch.Tensor, y: torch.Tensor, seed: int, config: PoolConfig | None) -> nn.Sequential:
    """One epoch of FC100-100-10 training written out in torch: the recipe's SGD, cosine schedule and weight decay,
    plus (with `config`) the layer pools refreshed by `lbfgs_attack` and mixed into every minibatch."""
    recipe = default_recipe(SPEC)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(SPEC)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    steps = math.ceil(x.shape[0] / recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    children, names = list(model.children()), [n for n, _ in model.named_children()]
    cuts = {} if config is None else {layer: 0 if layer == "input" else names.index(layer) + 1
                                      for layer in config.layers}
    pools: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {layer: None for layer in cuts}
    pool_gen = torch.Generator().manual_seed(seed + 7919)
    weights = [p for p in model.parameters() if p.dim() >= 2]
    model.train()
    perm = torch.randperm(x.shape[0], generator=gen)
    for step, i in enumerate(range(0, x.shape[0], recipe.batch_size)):
        xb, yb = x[perm[i:i + recipe.batch_size]], y[perm[i:i + recipe.batch_size]]
        opt.zero_grad(set_to_none=True)
        if config is not None and step > 0 and step % config.refresh_every == 0:
            xa, ya = xb[:config.attack_size], yb[:config.attack_size]
            for layer, cut in cuts.items():
                tail = nn.Sequential(*children[cut:])
                model.eval()
                with torch.no_grad():
                    h = nn.Sequential(*children[:cut])(xa)
                model.train()
                res = lbfgs_attack(tail, h, Misclassification(ya), search_steps=config.search_steps,
                                   bracket_steps=config.bracket_steps, max_iter=config.max_iter)
                keep = res.success & (res.rms > 0)
                new = (res.x_adv[keep].detach(), ya[keep])
                old = pools[layer]
                pools[layer] = new if old is None else (torch.cat([old[0], new[0]])[-config.capacity:],
                                                        torch.cat([old[1], new[1]])[-config.capacity:])
        loss, count = F.cross_entropy(model(xb), yb) * yb.numel(), yb.numel()
        for layer, cut in cuts.items():
            if pools[layer] is None:
                continue
            px, py = pools[layer]
            n_draw = min(py.numel(), max(1, round(config.mix * yb.numel())))
            idx = torch.randperm(py.numel(), generator=pool_gen)[:n_draw]
            loss = loss + F.cross_entropy(nn.Sequential(*children[cut:])(px[idx]), py[idx]) * n_draw
            count += n_draw
        loss = loss / count + 0.5 * recipe.weight_decay * sum(w.square().sum() for w in weights)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k], sb[k], rtol=0, atol=1e-6) for k in sa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layers", default="input,act1,act2", help="pool layers, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist("train", subset=args.subset)
    config = PoolConfig(layers=tuple(args.layers.split(",")))
    warm = load_mnist("train", subset=500)  # first calls pay for lazy initialisation: not timed
    train_with_pool(SPEC, warm, config=config, seed=0, epochs=1)
    hand_loop(warm.images, warm.labels, 0, config)
    times: dict[str, list[float]] = {k: [] for k in ("fit", "plain loop", "pool", "pool loop")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours, _ = fit(SPEC, data, seed=0, epochs=1, progress=False)
        times["fit"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = hand_loop(data.images, data.labels, 0, None)
        times["plain loop"].append(time.perf_counter() - t0)
        assert _same(ours, theirs), "plain: the hand-written loop and fit ended on different weights"
        run = train_with_pool(SPEC, data, config=config, seed=0, epochs=1)
        times["pool"].append(run.wall_time)
        t0 = time.perf_counter()
        theirs = hand_loop(data.images, data.labels, 0, config)
        times["pool loop"].append(time.perf_counter() - t0)
        assert _same(run.model, theirs), "pool: the hand-written loop and train_with_pool ended on different weights"
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.subset} images x 1 epoch, pools at {args.layers}, {torch.get_num_threads()} thread(s), median of "
          f"{args.repeats} (same weights at the end: checked)")
    print(f"plain: fit {med['fit']:.2f} s   hand-written loop {med['plain loop']:.2f} s   "
          f"ratio {med['fit'] / med['plain loop']:.2f}x")
    print(f"pool:  train_with_pool {med['pool']:.2f} s   hand-written loop {med['pool loop']:.2f} s   "
          f"ratio {med['pool'] / med['pool loop']:.2f}x   ({run.stats['refreshes']} refreshes, attacks "
          f"{run.attack_seconds:.2f} s = {100 * run.attack_seconds / run.wall_time:.0f}% of the pool epoch)")


if __name__ == "__main__":
    main()
