"""Attack benchmarks, every figure measured side by side in one run (same process, same machine state).

1. Box-constrained L-BFGS on FC100-100-10 (trained on full MNIST): the batched backend against the
   per-sample scipy L-BFGS-B reference with the same objective, c schedule and tolerances. Prints the
   throughput ratio (images/s) and the median-distortion ratio over images both attacked, at each size.
   The reference's per-image cost does not depend on N (it runs one image at a time), so with
   --reference-n M it is timed on the first M images only and its throughput is images/s over those.
   The batched solver also runs once with its torch two-loop instead of the C kernel (BLINDSPOTS_NATIVE=0),
   to show what the kernel adds.
2. FGSM over a list of ε against a minimal hand-written torch loop that computes the same outputs (one
   forward+backward, then per ε the adversarial images, kept, one forward pass for their success,
   prediction and confidence, and the RMS / L2 / L∞ distortions), against the same loop without the
   per-sample fields (x_adv and success only), and against the bare floor: the same number of
   forward+backward and forward passes, nothing else. Ours also validates the inputs.

Both sides run single-threaded (--threads, default 1): the scipy reference pins torch and BLAS to one
thread anyway (multi-threaded BLAS slows per-sample work several-fold), and a shared machine punishes
thread pools; so the ratios are per core.

    python benchmarks/bench_attacks.py              # 100 and 1000 images, FGSM on 10,000
    python benchmarks/bench_attacks.py --quick      # 50 images, FGSM on 2,000 (about a minute)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from blindspots.attacks import Misclassification, TargetedMisclassification, fgsm, lbfgs_attack, random_targets
from blindspots.data import load_mnist
from blindspots.models import train

EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def lbfgs_side_by_side(model: torch.nn.Module, n: int, reference_n: int, seed: int) -> None:
    data = load_mnist("test", subset=n)
    crit = TargetedMisclassification(random_targets(data.labels, seed), data.labels)
    fast = lbfgs_attack(model, data.images, crit, backend="batched")
    os.environ["BLINDSPOTS_NATIVE"] = "0"  # the same solver with the torch two-loop instead of the C kernel
    try:
        plain = lbfgs_attack(model, data.images, crit, backend="batched")
    finally:
        os.environ.pop("BLINDSPOTS_NATIVE")
    m = min(reference_n, n)
    ref = lbfgs_attack(model, data.images[:m], crit.subset(slice(0, m)), backend="scipy")
    fast_rate, ref_rate = n / fast.wall_time, m / ref.wall_time
    both = fast.success[:m] & ref.success
    med_fast = float(fast.rms[:m][both].median())
    med_ref = float(ref.rms[both].median())
    searched = torch.isfinite(fast.extras["c"])
    attacked = ~fast.extras["clean_adversarial"]
    flips = int((searched != fast.success)[attacked].sum())
    its = lambda r: float(r.extras["iterations"].sum() / r.extras["solves"].sum().clamp(min=1))  # noqa: E731
    print(f"\nL-BFGS, FC100-100-10, targeted (random targets, seed {seed}), {n} test images"
          + (f"; scipy reference on the first {m}" if m < n else ""))
    print(f"  {'':22}{'batched':>12}{'scipy':>12}{'ratio':>10}")
    print(f"  {'wall time (s)':22}{fast.wall_time:12.2f}{ref.wall_time:12.2f}")
    print(f"  {'images / s':22}{fast_rate:12.2f}{ref_rate:12.3f}{fast_rate / ref_rate:9.1f}x   (goal >= 20x at 1000)")
    print(f"  {'  torch-only direction':22}{n / plain.wall_time:12.2f}{'':12}{n / plain.wall_time / ref_rate:9.1f}x   "
          f"(BLINDSPOTS_NATIVE=0; same successes: {bool(torch.equal(plain.success, fast.success))})")
    print(f"  {'success rate':22}{float(fast.success[:m].float().mean()):12.3f}{float(ref.success.float().mean()):12.3f}")
    print(f"  {'median RMS distortion':22}{med_fast:12.5f}{med_ref:12.5f}{med_fast / med_ref:10.4f}   (goal <= 1.02)")
    print(f"  {'mean RMS distortion':22}{float(fast.rms[fast.success].mean()):12.5f}"
          f"{float(ref.rms[ref.success].mean()):12.5f}")
    print(f"  {'L-BFGS steps / solve':22}{its(fast):12.1f}{its(ref):12.1f}")
    print(f"  {'solves / image':22}{float(fast.extras['solves'].float().mean()):12.2f}"
          f"{float(ref.extras['solves'].float().mean()):12.2f}")
    print(f"  search vs fresh re-verification disagreements (batched): {flips} of {int(attacked.sum())}")


def _best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Minimum wall time of each callable over `repeats` interleaved rounds."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def fgsm_side_by_side(model: torch.nn.Module, n: int, batch_size: int, repeats: int) -> None:
    data = load_mnist("test", subset=n)
    x, y = data.images, data.labels
    crit = Misclassification(y)

    def ours() -> torch.Tensor:
        return fgsm(model, x, crit, EPSILONS, batch_size=batch_size).success

    def hand_written(fields: bool = False) -> torch.Tensor:
        """Plain torch: the adversarial images [K, N, ...] and their success; with fields=True also every
        other per-sample field our result carries (prediction, confidence, RMS / L2 / L∞ distortion)."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x_adv = torch.empty((len(EPSILONS), *x.shape))
        success = torch.empty((len(EPSILONS), n), dtype=torch.bool)
        other = torch.empty((5, len(EPSILONS), n))
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].clone().requires_grad_(True), y[i:i + batch_size]
            (g,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            step = g.sign()
            with torch.no_grad():
                for k, e in enumerate(EPSILONS):
                    adv = torch.add(xb, step, alpha=e, out=x_adv[k, i:i + batch_size]).clamp_(0, 1)
                    logits = model(adv)
                    success[k, i:i + batch_size] = logits.argmax(1) != yb
                    if fields:
                        conf, pred = logits.softmax(1).max(1)
                        r = (adv - xb).flatten(1)
                        l2 = r.norm(dim=1)
                        other[:, k, i:i + batch_size] = torch.stack(
                            [pred.float(), conf, l2 / r.shape[1] ** 0.5, l2, r.abs().amax(1)])
        return success

    def floor() -> None:
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size].clone().requires_grad_(True), y[i:i + batch_size]
            torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            with torch.no_grad():
                for _ in EPSILONS:
                    model(xb)

    assert torch.equal(ours(), hand_written()), "FGSM disagrees with the hand-written loop"
    t = _best_of(repeats, {"ours": ours, "hand": hand_written, "hand_fields": lambda: hand_written(True),
                           "floor": floor})
    print(f"\nFGSM, FC100-100-10, {n} test images, K = {len(EPSILONS)} ε, batches of {batch_size} "
          f"(best of {repeats})")
    print(f"  blindspots.attacks.fgsm                   {t['ours']:7.3f} s")
    print("  hand-written loop, same outputs: x_adv,")
    print(f"    success, pred, confidence, RMS / L2 / L∞ {t['hand_fields']:7.3f} s   ours / this = "
          f"{t['ours'] / t['hand_fields']:.3f}  (goal <= 1.1)")
    print(f"  hand-written loop, x_adv + success only   {t['hand']:7.3f} s   ours / this = "
          f"{t['ours'] / t['hand']:.3f}  (the fields Goodfellow's metrics and the")
    print(f"    {'':39}attack contract need cost the difference)")
    print(f"  floor: 1 fwd+bwd + K fwd passes, no more  {t['floor']:7.3f} s   ours / this = "
          f"{t['ours'] / t['floor']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 images for L-BFGS, 2,000 for FGSM")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="L-BFGS sizes (default 100 1000)")
    ap.add_argument("--reference-n", type=int, default=None, metavar="M",
                    help="time the scipy reference on the first M images of each size (default: all)")
    ap.add_argument("--fgsm-n", type=int, default=None, help="FGSM images (default 10,000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([50] if args.quick else [100, 1000])
    fgsm_n = args.fgsm_n or (2000 if args.quick else 10_000)

    tm = train("FC100-100-10", progress=False)
    from blindspots.attacks import native
    kernel = native._library()
    print(f"L-BFGS direction kernel: {'native C, ' + str(kernel._name) if kernel is not None else 'torch (no C compiler)'}")
    print(f"model FC100-100-10: test error {100 * tm.meta['test_error']:.2f}%, weights "
          f"{tm.meta['weights_sha256'][:12]}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for n in sizes:
        lbfgs_side_by_side(tm.model, n, args.reference_n or n, args.seed)
    fgsm_side_by_side(tm.model, fgsm_n, batch_size=1000, repeats=3 if args.quick else 5)


if __name__ == "__main__":
    main()
