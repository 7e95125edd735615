"""Science run: plain vs FGSM-adversarial maxout on the first 50k training images, per-epoch curves on the
validation split (last 10k) and the test set. Usage: science.py NAME PERTURB GRAD EPOCHS LR DECAY MAXNORM"""
import json, sys, time
from dataclasses import replace
import torch
from blindspots.data import load_mnist, ImageSet
from blindspots.models.train import default_recipe, fit, error_rate
from blindspots.training.adversarial import Objective
from blindspots.attacks import fgsm, Misclassification

name, pert, grad, epochs, lr, decay, maxnorm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
full = load_mnist("train")
order = torch.argsort(torch.as_tensor(full.indices))
o = order[:50000]
tr = ImageSet(full.images[o], full.labels[o], full.dataset, "train[:50000]", full.indices[o.numpy()], full.checksums)
va_x, va_y = full.images[order[50000:]], full.labels[order[50000:]]
test = load_mnist("test")
recipe = replace(default_recipe("MAXOUT"), lr=lr, lr_decay=decay, lr_floor=1e-3, max_norm=maxnorm, epochs=epochs)
obj = None if pert == "plain" else Objective(pert, 0.25, 0.5, gradient=grad)
curve = []
t0 = time.time()
def hook(epoch, model):
    r = {"epoch": epoch, "wall": round(time.time() - t0, 1)}
    r["val_err"] = float((torch.argmax(__import__("blindspots.models", fromlist=["predict_logits"]).predict_logits(model, va_x), 1) != va_y).float().mean())
    r["test_err"] = error_rate(model, test)
    f = fgsm(model, va_x[:2000], Misclassification(va_y[:2000]), [0.25])
    r["val_fgsm"] = float(f.success[0].float().mean())
    f = fgsm(model, test.images[:2000], Misclassification(test.labels[:2000]), [0.25])
    r["test_fgsm"] = float(f.success[0].float().mean())
    model.train()
    curve.append(r)
    print(json.dumps(r), flush=True)
    json.dump({"name": name, "args": sys.argv[1:], "curve": curve}, open(f"/tmp/gf/{name}.json", "w"))
fit("MAXOUT", tr, seed=0, recipe=recipe, objective=obj, on_epoch=hook, progress=False)
