import json
runs = {n: json.load(open(f"/tmp/gf/{n}.json"))["curve"] for n in ("plain", "adv", "advclean")}
for n, c in runs.items():
    print(f"{n:9s} epochs {len(c):2d} | " + " ".join(f"{r['epoch']}:{100*r['val_err']:.2f}" for r in c))
    bv = min(c, key=lambda r: (r["val_err"], r["epoch"]))
    ba = min(c, key=lambda r: (r["val_fgsm"], r["epoch"]))
    print(f"   best clean val: epoch {bv['epoch']} val {100*bv['val_err']:.2f}% test {100*bv['test_err']:.2f}% | "
          f"best adv val: epoch {ba['epoch']} val-fgsm {100*ba['val_fgsm']:.1f}% val {100*ba['val_err']:.2f}% | "
          f"last: val {100*c[-1]['val_err']:.2f}% test {100*c[-1]['test_err']:.2f}% val-fgsm {100*c[-1]['val_fgsm']:.1f}% test-fgsm {100*c[-1]['test_fgsm']:.1f}% wall {c[-1]['wall']:.0f}s")
p = runs["plain"]
for n in ("adv", "advclean"):
    a = runs[n]
    k = min(len(a), len(p))
    print(f"val_err {n} - plain per epoch (points): " + " ".join(f"{a[i]['val_err']*100 - p[i]['val_err']*100:+.2f}" for i in range(k)))
