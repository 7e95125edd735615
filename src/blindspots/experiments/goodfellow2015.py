"""`blindspots reproduce goodfellow2015`: the MNIST experiments of Goodfellow, Shlens & Szegedy,
Explaining and Harnessing Adversarial Examples (ICLR 2015), on real MNIST.

Stages (each cached by a key of its inputs, see stages.py): train the six 10-class models and the 3-vs-7
logistic regression; run FGSM on each at a list of ε (one gradient, K budgets) and save the ε = 0.25
set; re-verify every saved set from disk; feed every saved set to every model (transfer); classify
Gaussian-noise "rubbish" images; then write the report.

Documented choices where the paper is silent (also listed in the report):
- attacked images: the whole MNIST test set (or, with --n-attack / the quick profile, the first n test
  images of a fixed seeded order), clean errors included: the error rate is Goodfellow's, the share of
  attacked images whose FGSM image is misclassified;
- FGSM uses the softmax cross-entropy of the true label (the attack library's J), images clipped to
  [0, 1]; for the RBF net that J is taken on its log-outputs (it is trained with its own one-vs-rest
  likelihood, see models.zoo.one_vs_rest_nll);
- "confidence" is the softmax probability of the predicted class, except for the RBF net, whose
  outputs are independent: there it is the predicted unit's own output exp(logit) in (0, 1];
- "classified as a digit" (rubbish inputs): max softmax probability >= 0.5, or for the RBF net a unit
  output >= 0.5;
- the shallow softmax is FC10(1e-4) (Szegedy's softmax, trained to its optimum by L-BFGS); the maxout
  nets have 240 units x 5 pieces per layer (the paper's "original maxout network"; its 17.9% / 19.6% /
  40.9% / 81.4% come from a 1600-unit version trained with early stopping, which is not reproduced);
- adversarial training and the noise controls use the plain maxout's recipe and epochs, with the
  objective of training.adversarial (α = 0.5, ε = 0.25, no early stopping).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from .. import __version__  # noqa: E402
from ..attacks import Misclassification, attack_mode, fgsm, load_adversarial, save_adversarial, verify  # noqa: E402
from ..attacks.base import AttackResult  # noqa: E402
from ..data import ImageSet, load_mnist  # noqa: E402
from ..io import file_digest, write_atomic, write_json_atomic  # noqa: E402
from ..models import load_model, train  # noqa: E402
from ..training.adversarial import Objective  # noqa: E402
from ..models.zoo import BinaryLogistic, TwoClassLogits  # noqa: E402
from ..report.document import Figure, Report, Section, Table, run_facts_section, write_report  # noqa: E402
from ..report.reference import paper_value  # noqa: E402
from .stages import Experiment, pick_profile  # noqa: E402

PAPER = "goodfellow2015"
EPSILON = 0.25
EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
LOGREG_DECAY = 1e-4  # λ of mean logistic loss + (λ/2)·‖w‖² (unspecified in the paper)
LOGREG_CLASSES = (3, 7)  # negative, positive
DIGIT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Profile:
    """How big a run is: training data and epochs, attacked images, rubbish samples."""

    name: str
    train_subset: int | None
    maxout_epochs: int | None  # epochs of every maxout net (None: the recipe's own)
    n_attack: int | None  # None: the whole test set
    n_noise: int

    @property
    def description(self) -> str:
        data = "all 60,000 training images" if self.train_subset is None else \
            f"a seeded subset of {self.train_subset:,} training images"
        epochs = "the recipe's epochs" if self.maxout_epochs is None else f"{self.maxout_epochs} epochs"
        attacked = "the whole test set" if self.n_attack is None else f"{self.n_attack:,} test images"
        return f"models trained on {data} (maxout nets: {epochs}); {attacked} attacked; {self.n_noise:,} noise images"


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", train_subset=5_000, maxout_epochs=4, n_attack=1_000, n_noise=1_000),
    "standard": Profile("standard", train_subset=None, maxout_epochs=12, n_attack=None, n_noise=10_000),
    "full": Profile("full", train_subset=None, maxout_epochs=None, n_attack=None, n_noise=10_000),
}


@dataclass(frozen=True)
class Net:
    """One 10-class model of the experiment."""

    key: str
    label: str
    spec: str
    objective: Objective | None = None

    @property
    def is_maxout(self) -> bool:
        return self.spec == "MAXOUT"

    @property
    def independent_outputs(self) -> bool:
        return self.spec == "RBF"


NETS = (
    Net("softmax", "shallow softmax", "FC10(1e-4)"),
    Net("maxout", "maxout", "MAXOUT"),
    Net("maxout_adv", "maxout, adversarial training", "MAXOUT", Objective("fgsm", EPSILON, 0.5)),
    Net("maxout_sign", "maxout, ±ε sign-noise training", "MAXOUT", Objective("sign_noise", EPSILON, 0.5)),
    Net("maxout_uniform", "maxout, U(−ε, ε)-noise training", "MAXOUT", Objective("uniform_noise", EPSILON, 0.5)),
    Net("rbf", "RBF", "RBF"),
)
LOGREG = "logreg37"
LOGREG_LABEL = "logistic regression, 3 vs 7"


def noise_settings(train_pixels: Tensor) -> dict[str, dict[str, Any]]:
    """Rubbish-class inputs: i.i.d. Gaussian pixels. The first setting is the headline one."""
    mean, std = float(train_pixels.mean()), float(train_pixels.std())
    return {
        "data moments": {"mean": round(mean, 4), "std": round(std, 4), "clip": True,
                         "text": f"N({mean:.3f}, {std:.3f}²) per pixel (the mean and standard deviation of MNIST "
                                 "training pixels), clipped to [0, 1]"},
        "mid-grey": {"mean": 0.5, "std": 0.5, "clip": True, "text": "N(0.5, 0.5²) per pixel, clipped to [0, 1]"},
        "isotropic": {"mean": 0.0, "std": 1.0, "clip": False,
                      "text": "N(0, 1) per pixel, not clipped (outside the pixel box)"},
    }


def rubbish_images(n: int, setting: dict[str, Any], seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    x = setting["mean"] + setting["std"] * torch.randn((n, 1, 28, 28), generator=gen)
    return x.clamp(0, 1) if setting["clip"] else x


def logreg_data(split: str) -> tuple[Tensor, Tensor, np.ndarray]:
    """Images of 3s and 7s of a split, labels 0 (3) / 1 (7), and their rows in the IDX file."""
    data = load_mnist(split)
    neg, pos = LOGREG_CLASSES
    keep = (data.labels == neg) | (data.labels == pos)
    return data.images[keep], (data.labels[keep] == pos).long(), data.indices[keep.numpy()]


def fit_logreg(x: Tensor, y01: Tensor, weight_decay: float = LOGREG_DECAY) -> BinaryLogistic:
    """Mean logistic loss + (λ/2)·‖w‖² minimised to its optimum by full-batch L-BFGS (convex: from zero)."""
    model = BinaryLogistic()
    nn.init.zeros_(model.linear.weight)
    nn.init.zeros_(model.linear.bias)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    target = y01.float()

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (F.binary_cross_entropy_with_logits(model(x), target)
                + 0.5 * weight_decay * model.linear.weight.square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


@torch.no_grad()
def predict_confidence(model: nn.Module, x: Tensor, independent: bool = False,
                       batch_size: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """(predicted class, confidence, classified-as-a-digit) by a fresh eval-mode forward pass.

    Confidence is the softmax probability of the predicted class, or for a net with independent outputs
    (RBF) the predicted unit's own output exp(logit); "a digit" means confidence >= 0.5.
    """
    with attack_mode(model):
        device = next(model.parameters()).device
        logits = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                            for i in range(0, x.shape[0], batch_size)])
    top, pred = logits.max(dim=-1)
    conf = top.exp() if independent else logits.softmax(dim=-1).max(dim=-1).values
    return pred, conf, conf >= DIGIT_THRESHOLD


def _at_budget(result: AttackResult, k: int) -> AttackResult:
    """The fixed-budget result restricted to its k-th ε (x_adv [1, N, ...])."""
    sl = slice(k, k + 1)
    return replace(result, x_adv=result.x_adv[sl], success=result.success[sl], pred=result.pred[sl],
                   confidence=result.confidence[sl], distortion=result.distortion[sl], l2=result.l2[sl],
                   linf=result.linf[sl], budgets=(result.budgets or EPSILONS)[k:k + 1])


class Goodfellow2015(Experiment):
    """The experiment: holds the profile, the stage runner, and what each stage returned."""

    profile: Profile

    # ---- models -------------------------------------------------------------------------------
    def _epochs(self, net: Net) -> int | None:
        return self.profile.maxout_epochs if net.is_maxout else None

    def _train_stage(self, net: Net) -> dict[str, Any]:
        p = self.profile
        inputs = {"spec": net.spec, "objective": None if net.objective is None else net.objective.as_dict(),
                  "seed": self.seed, "train_subset": p.train_subset, "epochs": self._epochs(net),
                  "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            tm = train(net.spec, seed=self.seed, epochs=self._epochs(net), train_subset=p.train_subset,
                       device=self.device, progress=self.progress, objective=net.objective)
            m = tm.meta
            keep = ("spec", "seed", "train_error", "test_error", "weights_sha256", "wall_time_s", "recipe",
                    "epochs", "n_train", "objective")
            return {k: m.get(k) for k in keep} | {"checkpoint": str(tm.path), "label": net.label}

        result, _ = self.runner.run(f"train {net.key}", inputs, compute)
        return result

    def _load(self, net: Net) -> nn.Module:
        p = self.profile
        tm = load_model(net.spec, seed=self.seed, epochs=self._epochs(net), train_subset=p.train_subset,
                        device=self.device, objective=net.objective)
        if tm.meta["weights_sha256"] != self.models[net.key]["weights_sha256"]:
            raise RuntimeError(f"the stored checkpoint of {net.label} changed since its train stage ran; delete "
                               f"{self.out / 'stages'} to start over.")
        return tm.model

    def _logreg_stage(self) -> tuple[dict[str, Any], Path]:
        inputs = {"model": LOGREG, "classes": LOGREG_CLASSES, "weight_decay": LOGREG_DECAY, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            x, y, _ = logreg_data("train")
            model = fit_logreg(x, y)
            wall = time.perf_counter() - t0
            xt, yt, _ = logreg_data("test")
            weights = folder / "logreg37.safetensors"
            write_atomic(weights, lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                                      str(p)))
            return {"label": LOGREG_LABEL, "weights_sha256": file_digest(weights, "sha256"),
                    "train_error": _binary_error(model, x, y), "test_error": _binary_error(model, xt, yt),
                    "n_train": int(y.numel()), "n_test": int(yt.numel()), "wall_time_s": round(wall, 2),
                    "recipe": {"optimizer": "lbfgs (full batch, to the optimum)", "weight_decay": LOGREG_DECAY,
                               "loss": "mean logistic loss + (λ/2)·‖w‖²",
                               "classes": f"{LOGREG_CLASSES[0]} -> 0 (negative), {LOGREG_CLASSES[1]} -> 1 (positive)"}}

        return self.runner.run(f"train {LOGREG}", inputs, compute)

    def _load_logreg(self, folder: Path) -> BinaryLogistic:
        weights = folder / "logreg37.safetensors"
        if file_digest(weights, "sha256") != self.models[LOGREG]["weights_sha256"]:
            raise RuntimeError(f"{weights} does not match the hash its stage recorded; delete the stage folder.")
        model = BinaryLogistic()
        model.load_state_dict(load_file(str(weights)))
        return model.to(self.device).eval()

    # ---- FGSM ---------------------------------------------------------------------------------
    def _test_images(self) -> ImageSet:
        return load_mnist("test", subset=self.profile.n_attack)

    def _fgsm_stage(self, key: str, label: str, load: Callable[[], nn.Module],
                    data: Callable[[], tuple[Tensor, Tensor, np.ndarray]], independent: bool,
                    n: int | None) -> tuple[dict[str, Any], Path]:
        inputs = {"model": key, "weights": self.models[key]["weights_sha256"], "epsilons": EPSILONS,
                  "n_attack": n, "attack": "fgsm-untargeted", "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            model = load()
            x, y, rows = data()
            result = fgsm(model, x.to(self.device), Misclassification(y.to(self.device)), EPSILONS)
            k = EPSILONS.index(EPSILON)
            path = folder / "fgsm_eps0.25.safetensors"
            save_adversarial(path, _at_budget(result, k))
            curve_err, curve_conf = [], []
            for j in range(len(EPSILONS)):
                pred, conf, _ = predict_confidence(model, result.x_adv[j].cpu(), independent)
                if not torch.equal(pred, result.pred[j].cpu()):
                    raise RuntimeError(f"{label}: predictions at ε={EPSILONS[j]} differ between the attack's own "
                                       "re-check and a second forward pass.")
                wrong = pred != y
                curve_err.append(float(wrong.float().mean()))
                curve_conf.append(_mean(conf[wrong]))
            del result
            at = self._reverify(model, path, independent)
            if abs(at["error"] - curve_err[k]) > 0:
                raise RuntimeError(f"{label}: the error re-computed from disk ({at['error']}) differs from the "
                                   f"attack's ({curve_err[k]}).")
            if key != LOGREG:  # the logistic regression has its own figure (the paper's Figure 2)
                _examples_figure(path, model, independent, folder / "examples.png", label)
            return {"model": key, "label": label, "n_attacked": int(y.numel()), "test_rows": rows.tolist(),
                    "epsilons": list(EPSILONS), "error": curve_err, "wrong_confidence": curve_conf,
                    "at_0.25": at, "confidence_measure": "unit output exp(logit)" if independent
                    else "softmax probability"}

        return self.runner.run(f"fgsm {key}", inputs, compute)

    def _reverify(self, model: nn.Module, path: Path, independent: bool) -> dict[str, Any]:
        """Every number at ε = 0.25, recomputed from the saved set by fresh forward passes."""
        t = load_adversarial(path)
        x, x_adv, labels = t["x"], t["x_adv"][0], t["label"]
        success = verify(model, x_adv.to(self.device), Misclassification(labels.to(self.device))).cpu()
        if not torch.equal(success, t["success"][0].bool()):
            raise RuntimeError(f"{path}: {int((success != t['success'][0].bool()).sum())} images no longer "
                               "match their saved success flag.")
        pred_c, conf_c, _ = predict_confidence(model, x, independent)
        pred, conf, _ = predict_confidence(model, x_adv, independent)
        wrong, wrong_c = pred != labels, pred_c != labels
        return {"error": float(wrong.float().mean()), "clean_error": float(wrong_c.float().mean()),
                "wrong_confidence": _mean(conf[wrong]),
                "mean_confidence": float(conf.mean()), "clean_confidence": float(conf_c.mean()),
                "flipped": float((wrong & ~wrong_c).float().sum() / max(int((~wrong_c).sum()), 1)),
                "zero_gradient_images": int((t["linf"][0] == 0).sum()),
                "max_linf": float(t["linf"][0].max()), "reverified": True, "file": path.name,
                "file_sha256": file_digest(path, "sha256")}

    # ---- transfer and rubbish -----------------------------------------------------------------
    def _transfer_stage(self, loaders: dict[str, Callable[[], nn.Module]]) -> dict[str, Any]:
        keys = [n.key for n in NETS]
        inputs = {"sets": {k: self.attacks[k][0]["at_0.25"]["file_sha256"] for k in keys},
                  "columns": {k: self.models[k]["weights_sha256"] for k in keys}, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            models = {k: loaders[k]() for k in keys}
            rows: dict[str, dict[str, float]] = {}
            for r in keys:
                t = load_adversarial(self.attacks[r][1] / "fgsm_eps0.25.safetensors")
                rows[r] = {}
                for c in keys:
                    pred, _, _ = predict_confidence(models[c], t["x_adv"][0], c == "rbf")
                    rows[r][c] = float((pred != t["label"]).float().mean())
            return {"rows": rows, "columns": keys}

        result, _ = self.runner.run("transfer", inputs, compute)
        return result

    def _rubbish_stage(self, loaders: dict[str, Callable[[], nn.Module]]) -> dict[str, Any]:
        train_pixels = load_mnist("train").images
        settings = noise_settings(train_pixels)
        inputs = {"settings": settings, "n": self.profile.n_noise, "seed": self.seed,
                  "models": {k: self.models[k]["weights_sha256"] for k in loaders}, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            out: dict[str, Any] = {}
            models = {key: load() for key, load in loaders.items()}
            for name, s in settings.items():
                x = rubbish_images(self.profile.n_noise, s, self.seed)
                out[name] = {}
                for key, model in models.items():
                    pred, conf, digit = predict_confidence(model, x, key == "rbf")
                    out[name][key] = {"fooled": float(digit.float().mean()),
                                      "confidence": _mean(conf[digit]),
                                      "mean_confidence": float(conf.mean()),
                                      "classes": torch.bincount(pred[digit], minlength=10).tolist()}
            return {"settings": settings, "headline": next(iter(settings)), "results": out,
                    "n": self.profile.n_noise, "threshold": DIGIT_THRESHOLD}

        result, _ = self.runner.run("rubbish", inputs, compute)
        return result

    # ---- the whole run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        t = time.perf_counter()
        for net in tqdm(NETS, desc="train models", disable=not self.progress, leave=False):
            self.models[net.key] = self._train_stage(net)
        self.models[LOGREG], logreg_folder = self._logreg_stage()
        self.timings["train"] = time.perf_counter() - t

        t = time.perf_counter()
        loaders: dict[str, Callable[[], nn.Module]] = {net.key: (lambda net=net: self._load(net)) for net in NETS}
        n = self.profile.n_attack

        def test_data() -> tuple[Tensor, Tensor, np.ndarray]:
            d = self._test_images()
            return d.images, d.labels, d.indices

        for net in tqdm(NETS, desc="FGSM", disable=not self.progress, leave=False):
            self.attacks[net.key] = self._fgsm_stage(net.key, net.label, loaders[net.key], test_data,
                                                     net.independent_outputs, n)
        self.attacks[LOGREG] = self._fgsm_stage(LOGREG, LOGREG_LABEL,
                                                lambda: TwoClassLogits(self._load_logreg(logreg_folder)),
                                                lambda: logreg_data("test"), False, None)
        self.timings["fgsm"] = time.perf_counter() - t

        t = time.perf_counter()
        transfer = self._transfer_stage(loaders)
        rubbish = self._rubbish_stage(loaders)
        self.timings["transfer and rubbish"] = time.perf_counter() - t

        t = time.perf_counter()
        figures = self._figures(logreg_folder)
        self.timings["figures"] = time.perf_counter() - t
        results = {
            "experiment": PAPER, "profile": asdict(self.profile), "seed": self.seed,
            "models": self.models, "fgsm": {k: v[0] for k, v in self.attacks.items()},
            "transfer": transfer, "rubbish": rubbish,
            "findings": findings(self.models, {k: v[0] for k, v in self.attacks.items()}, transfer, rubbish),
            "figures": figures, "stages": [asdict(r) for r in self.runner.log], "facts": self._facts(),
            "wall_time_s": {k: round(v, 2) for k, v in self.timings.items()},
        }
        results["wall_time_s"]["total"] = round(time.perf_counter() - t_start, 2)
        write_json_atomic(self.out / "results.json", results)
        write_report(build_report(results), self.out)
        return results

    def _figures(self, logreg_folder: Path) -> dict[str, str]:
        fig_dir = self.out / "figures"
        curves = {k: (v[0]["epsilons"], v[0]["error"]) for k, v in self.attacks.items()}
        labels = {n.key: n.label for n in NETS} | {LOGREG: LOGREG_LABEL}
        _curves_figure(curves, labels, fig_dir / "error_vs_epsilon.png")
        t = load_adversarial(self.attacks[LOGREG][1] / "fgsm_eps0.25.safetensors")
        model = self._load_logreg(logreg_folder)
        _logreg_figure(model.linear.weight.detach().cpu().view(28, 28), t, fig_dir / "logreg_figure2.png")
        out = {"curves": "figures/error_vs_epsilon.png", "logreg": "figures/logreg_figure2.png"}
        for k, (_, folder) in self.attacks.items():
            if k != LOGREG:
                out[f"examples {k}"] = str((folder / "examples.png").relative_to(self.out))
        return out

    def _facts(self) -> dict[str, Any]:
        p = self.profile
        return {
            "profile": p.name, "profile_description": p.description, "seed": self.seed,
            "training_data": "full 60,000-image training set" if p.train_subset is None else
                             f"a fixed seeded subset of {p.train_subset} training images",
            "attacked_images": "the whole test set (10,000)" if p.n_attack is None else
                               f"{p.n_attack} test images (a fixed seeded subset)",
            "versions": {"blindspots": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "device": self.device,
            "choices": {
                "attack": "FGSM, x' = clip(x + ε·sign(∇ₓJ), 0, 1) with J the softmax cross-entropy of the true "
                          f"label, at ε in {list(EPSILONS)}; model in eval mode (dropout off); float32",
                "error_rate": "share of attacked test images whose FGSM image is misclassified (clean errors "
                              "included, as in the paper); every number at ε = 0.25 is recomputed from the saved "
                              "set by a fresh forward pass, after checking each saved success flag",
                "curves": "every ε of a model comes from one FGSM gradient, each ε re-checked by a fresh forward "
                          "pass; only the ε = 0.25 set is saved (about 63 MB per model for the whole test set, clean "
                          "and adversarial images); the other ε are recomputable from the saved clean images and "
                          "the checkpoint, FGSM being deterministic",
                "confidence": "mean, over misclassified images, of the softmax probability of the predicted class; "
                              "for the RBF net the predicted unit's own output exp(logit)",
                "digit_decision": f"rubbish inputs count as 'classified as a digit' when the confidence is >= "
                                  f"{DIGIT_THRESHOLD} (softmax max probability, or RBF unit output)",
                "shallow_softmax": "FC10(1e-4): softmax regression with (λ/2)·‖W‖², λ = 1e-4, L-BFGS to the optimum",
                "maxout": "2 maxout layers of 240 units x 5 pieces, dropout 0.2 on the input and 0.5 on hidden "
                          "layers, max-norm on incoming weight vectors, SGD + Nesterov momentum, cosine lr, no "
                          f"early stopping; epochs: {p.maxout_epochs or 'the recipe default'} (recipe in each "
                          "checkpoint's JSON and in the models table)",
                "adversarial_training": Objective("fgsm", EPSILON, 0.5).describe() + "; ∇ₓJ is taken through the clean "
                                        "term's own forward pass in training mode (its dropout masks; the "
                                        "adversarial term draws fresh ones), recomputed at every minibatch",
                "noise_controls": "the same objective with δ = ±ε sign noise or U(−ε, ε) noise instead of FGSM",
                "rbf": "one Gaussian unit per class, p_k(x) = exp(−Σ β_k (x − μ_k)²), trained with the one-vs-rest "
                       "likelihood of its independent outputs; attacked through softmax cross-entropy on its "
                       "log-outputs (the attack library's J)",
                "logreg": f"one logit, {LOGREG_CLASSES[0]} = negative, {LOGREG_CLASSES[1]} = positive class; mean "
                          f"logistic loss + (λ/2)·‖w‖², λ = {LOGREG_DECAY:g}, full-batch L-BFGS; trained on every 3 "
                          "and 7 of the training set, attacked on every 3 and 7 of the test set in all profiles; "
                          "FGSM through the two-logit form [0, z], whose cross-entropy is the logistic loss",
                "rubbish": "i.i.d. Gaussian pixels (three settings, the first is the headline); the paper does not "
                           "state the mean, variance or clipping of its noise",
                "not_reproduced": "the 1600-unit maxout with early stopping on adversarial validation error (the "
                                  "paper's source of 17.9%, 19.6%, 40.9% and 81.4%), the CIFAR-10 and ImageNet "
                                  "results, the ensemble and the L1-decay experiment",
            },
        }


def _mean(values: Tensor) -> float | None:
    """Mean of a possibly empty selection; None (not NaN, which JSON and equality handle badly) if empty."""
    return float(values.float().mean()) if values.numel() else None


def _gt(value: float | None, threshold: float) -> bool:
    return value is not None and value > threshold


def _binary_error(model: nn.Module, x: Tensor, y01: Tensor) -> float:
    with torch.no_grad():
        return float(((model(x) > 0).long() != y01).float().mean())


# ---- findings: our numbers beside the paper's ----------------------------------------------------
def _p(*path: str) -> float | None:
    return paper_value(PAPER, *path)


def findings(models: dict[str, Any], attacks: dict[str, Any], transfer: dict[str, Any],
             rubbish: dict[str, Any]) -> dict[str, Any]:
    """The seven experiments as {name: {quantity: {"ours": x, "paper": y}}}."""
    at = {k: v["at_0.25"] for k, v in attacks.items()}

    def pair(ours: float, *path: str) -> dict[str, float | None]:
        return {"ours": ours, "paper": _p(*path)}

    head = rubbish["headline"]
    rub = rubbish["results"][head]
    return {
        "1_fgsm": {
            "softmax_error": pair(at["softmax"]["error"], "fgsm_softmax", "error"),
            "softmax_confidence": pair(at["softmax"]["wrong_confidence"], "fgsm_softmax", "confidence"),
            "maxout_error": pair(at["maxout"]["error"], "fgsm_maxout", "error"),
            "maxout_confidence": pair(at["maxout"]["wrong_confidence"], "fgsm_maxout", "confidence"),
        },
        "2_logreg": {
            "clean_error": pair(at[LOGREG]["clean_error"], "logreg_3v7", "clean_error"),
            "fgsm_error": pair(at[LOGREG]["error"], "logreg_3v7", "fgsm_error"),
            "fgsm_confidence": pair(at[LOGREG]["wrong_confidence"]),
        },
        "3_adv_training": {
            "clean_error_before": pair(models["maxout"]["test_error"], "adv_training", "clean_error_before"),
            "clean_error_after": pair(models["maxout_adv"]["test_error"], "adv_training", "clean_error_after"),
            "fgsm_error_before": pair(at["maxout"]["error"], "adv_training", "fgsm_error_before"),
            "fgsm_error_after": pair(at["maxout_adv"]["error"], "adv_training", "fgsm_error_after"),
            "confidence_on_mistakes_after": pair(at["maxout_adv"]["wrong_confidence"], "adv_training",
                                                 "confidence_on_mistakes_after"),
            "transfer_original_to_adv": pair(transfer["rows"]["maxout"]["maxout_adv"], "transfer",
                                             "original_to_adversarially_trained"),
            "transfer_adv_to_original": pair(transfer["rows"]["maxout_adv"]["maxout"], "transfer",
                                             "adversarially_trained_to_original"),
        },
        "4_noise_controls": {
            "sign_noise_fgsm_error": pair(at["maxout_sign"]["error"], "noise_controls", "sign_noise_fgsm_error"),
            "sign_noise_confidence": pair(at["maxout_sign"]["wrong_confidence"], "noise_controls",
                                          "sign_noise_confidence"),
            "uniform_noise_fgsm_error": pair(at["maxout_uniform"]["error"], "noise_controls",
                                             "uniform_noise_fgsm_error"),
            "uniform_noise_confidence": pair(at["maxout_uniform"]["wrong_confidence"], "noise_controls",
                                             "uniform_noise_confidence"),
        },
        "5_rbf": {
            "fgsm_error": pair(at["rbf"]["error"], "rbf", "fgsm_error"),
            "confidence_on_mistakes": pair(at["rbf"]["wrong_confidence"], "rbf", "confidence_on_mistakes"),
            "confidence_clean": pair(at["rbf"]["clean_confidence"], "rbf", "confidence_clean"),
            "clean_error": pair(at["rbf"]["clean_error"]),
        },
        "6_rubbish": {
            "setting": head,
            "maxout_fooled": pair(rub["maxout"]["fooled"], "rubbish", "maxout", "fooled"),
            "maxout_confidence": pair(rub["maxout"]["confidence"], "rubbish", "maxout", "confidence"),
            "softmax_fooled": pair(rub["softmax"]["fooled"], "rubbish", "softmax", "fooled"),
            "softmax_confidence": pair(rub["softmax"]["confidence"], "rubbish", "softmax", "confidence"),
            "rbf_fooled": pair(rub["rbf"]["fooled"], "rubbish", "rbf", "fooled"),
        },
        "7_curves": {k: {"epsilons": v["epsilons"], "error": v["error"]} for k, v in attacks.items()},
    }


# ---- figures -------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def _curves_figure(curves: dict[str, tuple[list[float], list[float]]], labels: dict[str, str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    paper = {"softmax": _p("fgsm_softmax", "error"), "maxout": _p("fgsm_maxout", "error"),
             "maxout_adv": _p("adv_training", "fgsm_error_after"),
             "maxout_sign": _p("noise_controls", "sign_noise_fgsm_error"),
             "maxout_uniform": _p("noise_controls", "uniform_noise_fgsm_error"), "rbf": _p("rbf", "fgsm_error"),
             LOGREG: _p("logreg_3v7", "fgsm_error")}
    for i, (key, (eps, err)) in enumerate(curves.items()):
        color = f"C{i}"
        style = ("-", "--", ":", "-.")[i % 4]
        ax.plot(eps, [100 * e for e in err], style, marker="os^vD<>"[i % 7], ms=3, color=color, label=labels[key])
        if paper.get(key) is not None:
            ax.plot([EPSILON], [100 * paper[key]], "x", ms=8, mew=2, color=color)
    ax.axvline(EPSILON, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("ε (L∞ budget per pixel)")
    ax.set_ylabel("error on FGSM images (%)")
    ax.set_title("FGSM error vs ε (lines: ours; ×: the paper at ε = 0.25)", fontsize=10)
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def _logreg_figure(w: Tensor, t: dict[str, Tensor], path: Path) -> None:
    """The paper's Figure 2: weights, their sign, clean 3s and 7s, and their FGSM images at ε = 0.25."""
    x, x_adv, y, pred = t["x"], t["x_adv"][0], t["label"], t["pred"][0]
    pick = torch.cat([torch.nonzero(y == 0).flatten()[:8], torch.nonzero(y == 1).flatten()[:8]])
    fig, axes = plt.subplots(1, 4, figsize=(11, 3.2), dpi=100)
    lim = float(w.abs().max())
    axes[0].imshow(w.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0].set_title("(a) weights w (red > 0: votes 7)", fontsize=9)
    axes[1].imshow(w.sign().numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[1].set_title("(b) sign(w)", fontsize=9)

    def grid(images: Tensor) -> np.ndarray:
        rows = [torch.cat(list(images[r * 4:(r + 1) * 4, 0]), dim=1) for r in range(4)]
        return torch.cat(rows, dim=0).numpy()

    axes[2].imshow(grid(x[pick]), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("(c) test 3s and 7s", fontsize=9)
    axes[3].imshow(grid(x_adv[pick]), cmap="gray", vmin=0, vmax=1)
    names = np.array([str(c) for c in LOGREG_CLASSES])
    wrong = int((pred[pick] != y[pick]).sum())
    axes[3].set_title(f"(d) FGSM, ε = 0.25: {wrong}/{len(pick)} misclassified", fontsize=9)
    for r in range(4):
        for c in range(4):
            i = pick[r * 4 + c]
            axes[3].text(c * 28 + 1, r * 28 + 7, names[int(pred[i])], color="#e33", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def _examples_figure(path: Path, model: nn.Module, independent: bool, out: Path, label: str) -> None:
    """Eight clean test images and their FGSM images at ε = 0.25, with prediction and confidence."""
    t = load_adversarial(path)
    x, x_adv, y = t["x"][:8], t["x_adv"][0][:8], t["label"][:8]
    pred_c, conf_c, _ = predict_confidence(model, x, independent)
    pred, conf, _ = predict_confidence(model, x_adv, independent)
    fig, axes = plt.subplots(2, 8, figsize=(10, 3.0), dpi=100)
    for j in range(x.shape[0]):
        for row, (img, p, c) in enumerate(((x[j], pred_c[j], conf_c[j]), (x_adv[j], pred[j], conf[j]))):
            ax = axes[row, j]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ok = int(p) == int(y[j])
            ax.set_title(f"{int(p)} ({100 * float(c):.0f}%)", fontsize=8, color="k" if ok else "#c0392b")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("clean", fontsize=8)
    axes[1, 0].set_ylabel("ε = 0.25", fontsize=8)
    fig.suptitle(f"{label}: prediction (confidence); red = wrong", fontsize=9)
    _save(fig, out)


# ---- the report ----------------------------------------------------------------------------------
def _pct(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.{digits}f}%"


def _cmp(ours: float, paper: float | None, tol: float = 0.10) -> str:
    """'close to' / 'above' / 'below' the paper, with a tolerance in absolute fraction."""
    if paper is None or ours is None:
        return "no paper value"
    d = ours - paper
    if abs(d) <= tol:
        return f"within {100 * tol:.0f} points of the paper"
    return f"{100 * abs(d):.1f} points {'above' if d > 0 else 'below'} the paper"


def _row(name: str, f: dict[str, Any], digits: int = 1) -> list[Any]:
    return [name, _pct(f["ours"], digits), _pct(f["paper"], digits)]


def build_report(results: dict[str, Any]) -> Report:
    """Tables with our numbers beside the paper's, verdict sentences computed from them, figures, facts."""
    f, facts = results["findings"], results["facts"]
    intro = [
        "Reproduction of Goodfellow, Shlens & Szegedy, Explaining and Harnessing Adversarial Examples (ICLR 2015), "
        f"MNIST experiments, on genuine MNIST. Profile: {facts['profile']} ({facts['profile_description']}); seed "
        f"{facts['seed']}; training data: {facts['training_data']}; attacked: {facts['attacked_images']}; ε = 0.25 "
        "unless stated.",
        "Paper values come from the package's reference data file. Every number of ours is in results.json and is "
        "recomputable from the saved checkpoints and adversarial sets under stages/ (each FGSM set at ε = 0.25 was "
        "re-loaded from disk and re-verified by a fresh forward pass before any number was taken from it).",
    ]
    sections = [_sec_fgsm(f), _sec_logreg(f, results), _sec_adv(f, results), _sec_noise(f), _sec_rbf(f),
                _sec_rubbish(results), _sec_curves(results), _sec_transfer(results), _sec_models(results),
                _sec_facts(results)]
    return Report("blindspots — Goodfellow et al. 2015 reproduced", intro, sections)


def _sec_fgsm(f: dict[str, Any]) -> Section:
    e = f["1_fgsm"]
    rows = [_row("shallow softmax: error", e["softmax_error"]),
            _row("shallow softmax: confidence on wrong labels", e["softmax_confidence"]),
            _row("maxout: error", e["maxout_error"]),
            _row("maxout: confidence on wrong labels", e["maxout_confidence"])]
    both = e["softmax_error"]["ours"] > 0.5 and e["maxout_error"]["ours"] > 0.5
    confident = _gt(e["softmax_confidence"]["ours"], 0.5) and _gt(e["maxout_confidence"]["ours"], 0.5)
    verdict = (f"FGSM at ε = 0.25 misleads the shallow softmax on {_pct(e['softmax_error']['ours'])} of test images "
               f"({_cmp(e['softmax_error']['ours'], e['softmax_error']['paper'])}) and the maxout net on "
               f"{_pct(e['maxout_error']['ours'])} ({_cmp(e['maxout_error']['ours'], e['maxout_error']['paper'])}), "
               f"with mean confidence {_pct(e['softmax_confidence']['ours'])} and "
               f"{_pct(e['maxout_confidence']['ours'])} on the wrong labels. "
               + ("Both models are fooled on most inputs" if both
                  else "At least one model is fooled on fewer than half the inputs, unlike the paper")
               + (", and their mistakes are confident (mean > 50%), as in the paper." if confident
                  else ", but not all mistakes are confident (a mean of 50% or less), unlike the paper."))
    return Section("1 — FGSM on the shallow softmax and the maxout net", [],
                   [Table(["quantity", "ours", "paper"], rows, "FGSM, ε = 0.25", verdict, fmt="str")])


def _sec_logreg(f: dict[str, Any], results: dict[str, Any]) -> Section:
    e = f["2_logreg"]
    m = results["models"][LOGREG]
    rows = [_row("clean test error", e["clean_error"]), _row("FGSM error, ε = 0.25", e["fgsm_error"]),
            _row("confidence on wrong labels", e["fgsm_confidence"]),
            ["training error", _pct(m["train_error"]), "—"]]
    verdict = (f"Logistic regression separates 3s from 7s with {_pct(e['clean_error']['ours'], 2)} test error "
               f"(paper {_pct(e['clean_error']['paper'], 2)}); the FGSM perturbation, which for this model is "
               f"−ε·y·sign(w) exactly, raises it to {_pct(e['fgsm_error']['ours'])} "
               f"({_cmp(e['fgsm_error']['ours'], e['fgsm_error']['paper'])}).")
    fig = Figure(Path(results["figures"]["logreg"]),
                 "The paper's Figure 2: (a) the weights of the 3-vs-7 logistic regression, (b) their sign, "
                 "(c) test 3s and 7s, (d) their FGSM images at ε = 0.25 with the predicted class in red.")
    return Section("2 — Logistic regression, 3 versus 7", [], [Table(["quantity", "ours", "paper"], rows,
                   f"{m['n_train']} training and {m['n_test']} test images of 3s and 7s", verdict, fmt="str")], [fig])


def _sec_adv(f: dict[str, Any], results: dict[str, Any]) -> Section:
    e = f["3_adv_training"]
    rows = [_row("clean test error, plain training", e["clean_error_before"], 2),
            _row("clean test error, adversarial training", e["clean_error_after"], 2),
            _row("FGSM error, plain training", e["fgsm_error_before"]),
            _row("FGSM error, adversarial training", e["fgsm_error_after"]),
            _row("confidence on mistakes, adversarial training", e["confidence_on_mistakes_after"]),
            _row("plain net's FGSM images → adversarially trained net", e["transfer_original_to_adv"]),
            _row("adversarially trained net's FGSM images → plain net", e["transfer_adv_to_original"])]
    before, after = e["fgsm_error_before"]["ours"], e["fgsm_error_after"]["ours"]
    cb, ca = e["clean_error_before"]["ours"], e["clean_error_after"]["ours"]
    fwd, back = e["transfer_original_to_adv"]["ours"], e["transfer_adv_to_original"]["ours"]
    sentences = [
        f"Adversarial training {'lowers' if after < before else 'does not lower'} the maxout net's FGSM error "
        f"({_pct(before)} → {_pct(after)}; paper {_pct(e['fgsm_error_before']['paper'])} → "
        f"{_pct(e['fgsm_error_after']['paper'])}, the latter for a 1600-unit net).",
        f"Clean test error goes from {_pct(cb, 2)} to {_pct(ca, 2)}: adversarial training "
        f"{'also regularises' if ca < cb else 'does not improve clean error here'} (paper "
        f"{_pct(e['clean_error_before']['paper'], 2)} → {_pct(e['clean_error_after']['paper'], 2)}).",
        f"Its remaining mistakes are made with {_pct(e['confidence_on_mistakes_after']['ours'])} mean confidence "
        f"(paper {_pct(e['confidence_on_mistakes_after']['paper'])}).",
        f"Transfer: the plain net's FGSM images fool the adversarially trained net on {_pct(fwd)} (paper "
        f"{_pct(e['transfer_original_to_adv']['paper'])}); the adversarially trained net's images fool the plain "
        f"net on {_pct(back)} (paper {_pct(e['transfer_adv_to_original']['paper'])}); the paper's asymmetry "
        f"(the second larger) {'holds' if back > fwd else 'does not hold'} here."]
    return Section("3 — Adversarial training of the maxout net (α = 0.5, ε = 0.25)", [],
                   [Table(["quantity", "ours", "paper"], rows, "Adversarial training", " ".join(sentences),
                          fmt="str")])


def _sec_noise(f: dict[str, Any]) -> Section:
    e, a = f["4_noise_controls"], f["3_adv_training"]
    rows = [_row("±ε sign noise: FGSM error", e["sign_noise_fgsm_error"]),
            _row("±ε sign noise: confidence on mistakes", e["sign_noise_confidence"]),
            _row("U(−ε, ε) noise: FGSM error", e["uniform_noise_fgsm_error"]),
            _row("U(−ε, ε) noise: confidence on mistakes", e["uniform_noise_confidence"]),
            _row("(FGSM adversarial training: FGSM error)", a["fgsm_error_after"]),
            _row("(plain training: FGSM error)", a["fgsm_error_before"])]
    adv, plain = a["fgsm_error_after"]["ours"], a["fgsm_error_before"]["ours"]
    worst = min(e["sign_noise_fgsm_error"]["ours"], e["uniform_noise_fgsm_error"]["ours"])
    gap_noise = plain - worst
    gap_adv = plain - adv
    verdict = (f"Training with noise of the same size instead of FGSM leaves FGSM error at "
               f"{_pct(e['sign_noise_fgsm_error']['ours'])} (sign noise) and {_pct(e['uniform_noise_fgsm_error']['ours'])} "
               f"(uniform noise), against {_pct(plain)} for plain training and {_pct(adv)} for adversarial training: "
               f"noise removes {100 * gap_noise:.1f} points of FGSM error at best, adversarial training "
               f"{100 * gap_adv:.1f}. "
               + ("Adversarial training itself gained less than 2 points here, so this run cannot tell the two "
                  "apart." if gap_adv < 0.02 else "As in the paper, noise is no substitute for adversarial examples."
                  if gap_adv > 2 * max(gap_noise, 0.0) else "Unlike the paper, noise training helps comparably here."))
    return Section("4 — Controls: training with noise instead of FGSM", [],
                   [Table(["quantity", "ours", "paper"], rows, "Noise controls (same recipe, same epochs)", verdict,
                          fmt="str")])


def _sec_rbf(f: dict[str, Any]) -> Section:
    e, m = f["5_rbf"], f["1_fgsm"]
    rows = [_row("FGSM error", e["fgsm_error"]), _row("confidence on mistakes (unit output)", e["confidence_on_mistakes"]),
            _row("mean confidence on clean test images", e["confidence_clean"]), _row("clean test error", e["clean_error"])]
    low_conf = not _gt(e["confidence_on_mistakes"]["ours"], e["confidence_clean"]["ours"] / 2)
    verdict = (f"The RBF net's FGSM error is {_pct(e['fgsm_error']['ours'])} "
               f"({_cmp(e['fgsm_error']['ours'], e['fgsm_error']['paper'])}; maxout: "
               f"{_pct(m['maxout_error']['ours'])}); its mistakes carry {_pct(e['confidence_on_mistakes']['ours'])} "
               f"mean unit output against {_pct(e['confidence_clean']['ours'])} on clean images: "
               + ("it knows when it is being fooled, as the paper argues."
                  if low_conf else "unlike the paper, its mistakes are not markedly less confident."))
    return Section("5 — The RBF network", [], [Table(["quantity", "ours", "paper"], rows, "RBF net, ε = 0.25",
                                                     verdict, fmt="str")])


def _sec_rubbish(results: dict[str, Any]) -> Section:
    r = results["rubbish"]
    labels = {n.key: n.label for n in NETS}
    names = [r["headline"]] + [n for n in r["results"] if n != r["headline"]]
    tables = []
    for name in names:
        per, head = r["results"][name], name == r["headline"]
        rows = []
        for key in (n.key for n in NETS):
            v = per[key]
            paper_key = key if head and key in ("softmax", "maxout", "rbf") else None
            pf = _p("rubbish", paper_key, "fooled") if paper_key else None
            pc = _p("rubbish", paper_key, "confidence") if paper_key else None
            rows.append([labels[key], _pct(v["fooled"], 2), _pct(pf, 2), _pct(v["confidence"]), _pct(pc)])
        verdict = ""
        if head:
            mx, sm, rb = per["maxout"]["fooled"], per["softmax"]["fooled"], per["rbf"]["fooled"]
            verdict = (f"Of {r['n']} noise images, the maxout net calls {_pct(mx, 2)} a digit, the shallow softmax "
                       f"{_pct(sm, 2)} and the RBF net {_pct(rb, 2)}; the paper's ordering (maxout > softmax > RBF = 0%) "
                       f"{'holds' if mx > sm > rb == 0 else 'does not hold'} here.")
        tables.append(Table(["model", "classified as a digit", "paper", "mean confidence of those", "paper"], rows,
                            f"Rubbish inputs, {r['settings'][name]['text']}" + (" (headline setting)" if head else ""),
                            verdict, fmt="str"))
    para = [f"An input counts as 'classified as a digit' when the model's confidence is at least {r['threshold']}: "
            "the largest softmax probability, or for the RBF net the largest unit output (its outputs are "
            "independent, so all ten may be near 0). The paper does not state its noise distribution; three are "
            "shown, the paper's numbers beside the headline one."]
    return Section("6 — Rubbish-class inputs (Gaussian noise)", para, tables)


def _sec_curves(results: dict[str, Any]) -> Section:
    fg = results["fgsm"]
    labels = {n.key: n.label for n in NETS} | {LOGREG: LOGREG_LABEL}
    eps = EPSILONS
    rows = [[labels[k]] + [_pct(e) for e in v["error"]] for k, v in fg.items()]
    monotone = [labels[k] for k, v in fg.items() if all(a <= b + 1e-9 for a, b in zip(v["error"], v["error"][1:]))]
    k25 = eps.index(EPSILON)
    best = min((k for k in fg if k != LOGREG), key=lambda k: fg[k]["error"][k25])
    sentences = [f"Error grows monotonically with ε for {len(monotone)} of {len(fg)} models; at ε = 0.25 the most "
                 f"robust 10-class model is '{labels[best]}' ({_pct(fg[best]['error'][k25])})."]
    for k, v in fg.items():
        err = v["error"]
        peak = max(range(1, k25), key=lambda j: err[j], default=None)
        if peak is not None and err[peak] > min(err[peak:k25 + 1]) + 0.02:
            low = min(range(peak, k25 + 1), key=lambda j: err[j])
            sentences.append(f"'{labels[k]}' resists FGSM better at ε = {eps[low]:g} ({_pct(err[low])}) than at the "
                             f"smaller ε = {eps[peak]:g} ({_pct(err[peak])}): a non-monotone curve warns that its "
                             "gradient is a poor guide near the data (gradient masking), so its FGSM error can "
                             "overstate its robustness to stronger attacks.")
    verdict = " ".join(sentences)
    fig = Figure(Path(results["figures"]["curves"]), "Error on FGSM images vs ε for every model; crosses mark the "
                 "paper's values at ε = 0.25.")
    figs = [fig] + [Figure(Path(results["figures"][f"examples {k}"]),
                           f"{labels[k]}: clean test images (top) and their FGSM images at ε = 0.25 (bottom)")
                    for k in ("maxout", "maxout_adv", "rbf")]
    return Section("7 — Error vs ε", [], [Table(["model"] + [f"ε = {e:g}" for e in eps], rows,
                                                "FGSM error at each ε (one gradient per image, every ε re-checked)",
                                                verdict, fmt="str")], figs)


def _sec_transfer(results: dict[str, Any]) -> Section:
    t = results["transfer"]
    labels = {n.key: n.label for n in NETS}
    rows = [[labels[r]] + [_pct(t["rows"][r][c]) for c in t["columns"]] for r in t["columns"]]
    off = [t["rows"][r][c] for r in t["columns"] for c in t["columns"] if r != c]
    verdict = (f"Off-diagonal cells (FGSM images of one model fed to another) range over {_pct(min(off))}–"
               f"{_pct(max(off))}: FGSM examples transfer, to a degree that depends on the pair.")
    return Section("Transfer between all 10-class models (ε = 0.25)", [],
                   [Table(["FGSM images of ↓ / fed to →"] + [labels[c] for c in t["columns"]], rows,
                          "Error of each column model on each row model's FGSM set", verdict, fmt="str")])


def _sec_models(results: dict[str, Any]) -> Section:
    rows = []
    for key, m in results["models"].items():
        at = results["fgsm"][key]["at_0.25"]
        recipe = m.get("recipe") or {}
        rows.append([m.get("label", key), _pct(m["train_error"], 2), _pct(m["test_error"], 2),
                     str(m.get("epochs", recipe.get("epochs", "—"))), str(m.get("n_train", "—")),
                     f"{m.get('wall_time_s', 0):.0f}", str(at["zero_gradient_images"])])
    verdict = ("'zero-gradient images' counts attacked images whose FGSM step was all zero (the cross-entropy "
               "saturated in float32); such images cannot be moved by FGSM and count as not fooled unless "
               "misclassified already.")
    recipes = []
    for key, m in results["models"].items():
        r = m.get("recipe") or {}
        unused = ("note", "lr", "batch_size", "momentum") if str(r.get("optimizer", "")).startswith("lbfgs") \
            else ("note",)
        shown = ", ".join(f"{k} {v}" for k, v in r.items() if v not in (None, 0, 0.0, "") and k not in unused)
        objective = (m.get("objective") or {}).get("description")
        recipes.append(f"{m.get('label', key)}: {shown}" + (f"; {r['note']}" if r.get("note") else "")
                       + (f"; objective {objective}" if objective else ""))
    return Section("Models", ["Training recipes (also in each checkpoint's JSON):"] + recipes,
                   [Table(["model", "train err.", "test err.", "epochs", "training images", "train wall (s)",
                           "zero-gradient images"], rows, "Trained models", verdict, fmt="str")])


def _sec_facts(results: dict[str, Any]) -> Section:
    return run_facts_section(results)


# ---- entry points --------------------------------------------------------------------------------
def reproduce(out: str | Path = "runs/goodfellow2015", profile: str = "standard", *, seed: int = 0,
              n_attack: int | None = None, device: str = "cpu", progress: bool = True,
              announce: Any = print) -> dict[str, Any]:
    """Run (or resume) the reproduction; returns results.json's content."""
    prof = pick_profile(PROFILES, profile, n_attack)
    return Goodfellow2015(Path(out), prof, seed=seed, device=device, progress=progress, announce=announce).run()


def terminal_summary(results: dict[str, Any]) -> str:
    """A compact text table for the end of a run: each experiment's headline numbers, ours (paper)."""
    f = results["findings"]
    lines = [f"{'experiment (ε = 0.25)':<52} {'ours':>8} {'paper':>8}"]

    def add(name: str, v: dict[str, Any], digits: int = 1) -> None:
        lines.append(f"{name:<52} {_pct(v['ours'], digits):>8} {_pct(v['paper'], digits):>8}")

    add("1 softmax FGSM error", f["1_fgsm"]["softmax_error"])
    add("1 softmax confidence on wrong labels", f["1_fgsm"]["softmax_confidence"])
    add("1 maxout FGSM error", f["1_fgsm"]["maxout_error"])
    add("1 maxout confidence on wrong labels", f["1_fgsm"]["maxout_confidence"])
    add("2 logreg 3v7 clean error", f["2_logreg"]["clean_error"], 2)
    add("2 logreg 3v7 FGSM error", f["2_logreg"]["fgsm_error"])
    a = f["3_adv_training"]
    add("3 maxout clean error, plain", a["clean_error_before"], 2)
    add("3 maxout clean error, adversarial training", a["clean_error_after"], 2)
    add("3 maxout FGSM error, adversarial training", a["fgsm_error_after"])
    add("3 confidence on mistakes, adversarial training", a["confidence_on_mistakes_after"])
    add("3 transfer plain -> adversarially trained", a["transfer_original_to_adv"])
    add("3 transfer adversarially trained -> plain", a["transfer_adv_to_original"])
    add("4 FGSM error after ±ε sign-noise training", f["4_noise_controls"]["sign_noise_fgsm_error"])
    add("4 FGSM error after U(-ε, ε)-noise training", f["4_noise_controls"]["uniform_noise_fgsm_error"])
    add("5 RBF FGSM error", f["5_rbf"]["fgsm_error"])
    add("5 RBF confidence on mistakes", f["5_rbf"]["confidence_on_mistakes"])
    add("5 RBF confidence on clean images", f["5_rbf"]["confidence_clean"])
    r = f["6_rubbish"]
    add(f"6 noise called a digit: maxout ({r['setting']})", r["maxout_fooled"], 2)
    add("6 noise called a digit: softmax", r["softmax_fooled"], 2)
    add("6 noise called a digit: RBF", r["rbf_fooled"], 2)
    lines.append("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in results["wall_time_s"].items()))
    return "\n".join(lines)
