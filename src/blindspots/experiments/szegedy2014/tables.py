"""Tables 1-3 of Szegedy et al. 2014 as resumable stages: train the models, attack each with box-constrained L-BFGS,
feed every adversarial, magnified and noise set to every model.

Gaussian controls come in two readings, on the same seeded N(0, 1) draw for every σ and column model:
- the paper's: x + σ·N(0, 1) unclipped, so the RMS distortion is σ (the paper's distortion column reads exactly 0.1
  and 0.3) and the inputs leave the [0, 1] box (the share of pixels outside it is recorded);
- clipped to [0, 1] (`attacks.gaussian_noise`), whose realised RMS is below σ; the "matched noise" rows are clipped
  noise with the same realised RMS as each adversarial row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ... import __version__
from ...attacks import (
    AttackResult,
    TargetedMisclassification,
    gaussian_noise,
    lbfgs_attack,
    load_adversarial,
    magnify,
    random_targets,
    save_adversarial,
)
from ...data import load_mnist
from ...data.datasets import subset_order
from ...models import predict, train
from ...parallel import World, sharded_map
from ...report.figures import examples_grid
from ...report.plots import distortion_histogram
from ...report.reference import paper_value

TABLE1_MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")
# Table 3: (display name, spec, training split)
TABLE3_MODELS = (("FC100-100-10", "FC100-100-10", "P1"), ("FC123-456-10", "FC123-456-10", "P1"),
                 ("FC100-100-10'", "FC100-100-10", "P2"))
GAUSSIAN_SIGMAS = (0.1, 0.3)
MAGNIFY_SIGMA = 0.1
CERTIFY_STEPS = 12  # bisection steps of Table 1's certified radius: accurate to the L-BFGS distance / 4096
# Images per L-BFGS call: fixed, whatever the number of processes, so torchrun's ranks (chunk i on rank i % size)
# reproduce one process's numbers exactly.
ATTACK_CHUNK = 64

SetMaker = Callable[[], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ModelRef:
    """One trained model of the experiment: its display name, spec and training split."""

    label: str
    spec: str
    split: str


def model_refs() -> list[ModelRef]:
    """Table 1's models on the training set, then Table 3's on P1/P2."""
    refs = [ModelRef(s, s, "train") for s in TABLE1_MODELS]
    refs += [ModelRef(label + " [" + split + "]", spec, split) for label, spec, split in TABLE3_MODELS]
    return refs


def display(ref: ModelRef) -> str:
    """Name of a model in the tables: Table 3's names for the P1/P2 models, the spec otherwise."""
    for label, spec, split in TABLE3_MODELS:
        if ref.spec == spec and ref.split == split:
            return label
    return ref.label


def rms(r: torch.Tensor) -> torch.Tensor:
    """Per-image RMS of a perturbation (the paper's distortion measure)."""
    return r.flatten(1).square().mean(dim=1).sqrt()


def unclipped_gaussian(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """x + σ·N(0, 1), NOT clipped: the paper's reading of its Gaussian rows. The N(0, 1) draw is the one
    `attacks.gaussian_noise(x, σ, seed)` clips (a seeded CPU generator), so the two readings share their noise."""
    gen = torch.Generator().manual_seed(int(seed))
    return x + sigma * torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.dtype)


class TableStages:
    """The stages behind Tables 1-3, mixed into the experiment (which holds runner, profile, models, attacks)."""

    runner: Any
    profile: Any
    seed: int
    device: str
    progress: bool
    world: World
    models: dict[str, dict[str, Any]]
    attacks: dict[str, tuple[dict[str, Any], Path]]
    stage: Callable[..., tuple[dict[str, Any], Path]]

    def _train_stage(self, ref: ModelRef) -> dict[str, Any]:
        p = self.profile
        inputs = {"spec": ref.spec, "split": ref.split, "seed": self.seed, "train_subset": p.train_subset,
                  "epochs": p.epochs, "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            tm = train(ref.spec, split=ref.split, seed=self.seed, epochs=p.epochs, train_subset=p.train_subset,
                       device=self.device, progress=self.progress)
            m = tm.meta
            return {k: m[k] for k in ("spec", "split", "seed", "train_error", "test_error", "weights_sha256",
                                      "wall_time_s", "recipe", "epochs", "n_train")} | {"checkpoint": str(tm.path)}

        result, _ = self.stage(f"train {ref.label}", inputs, compute)  # rank 0 trains; the others wait for it
        return result

    def _load(self, ref: ModelRef) -> torch.nn.Module:
        """The stored model of a train stage (loaded and hash-checked once per run)."""
        m = self.models[ref.label]
        return self.load_checkpoint_checked(m["checkpoint"], ref.spec, m["weights_sha256"])

    def _attack_stage(self, ref: ModelRef) -> tuple[dict[str, Any], Path]:
        p = self.profile
        weights = self.models[ref.label]["weights_sha256"]
        inputs = {"model": ref.label, "weights": weights, "n_attack": p.n_attack, "seed": self.seed,
                  "lbfgs": p.lbfgs, "attack": "lbfgs-targeted-random", "version": __version__}

        def compute(folder: Path) -> dict[str, Any]:
            model = self._load(ref)
            test = load_mnist("test")
            order = torch.from_numpy(subset_order(len(test), self.seed))
            correct = predict(model, test.images[order]) == test.labels[order]
            positions = torch.nonzero(correct).flatten()[: p.n_attack]
            chosen = order[positions]
            n_clean_errors_skipped = int((~correct[: int(positions[-1]) + 1]).sum())
            x, y = test.images[chosen], test.labels[chosen]
            targets = random_targets(y, seed=self.seed)  # drawn for all images before they are split into chunks
            result = self._sharded_lbfgs(model, x, TargetedMisclassification(targets, y))
            if not self.world.is_main:  # rank 0 writes the stage's files
                return {}
            save_adversarial(folder / "adversarial.safetensors", result)
            ok = result.success.cpu()
            dist = result.rms.cpu()[ok].numpy()
            examples_grid(result.x.cpu()[ok][:10], result.x_adv.cpu()[ok][:10], result.labels.cpu()[ok][:10],
                          result.pred.cpu()[ok][:10], folder / "examples.png")
            distortion_histogram(dist, folder / "distortion.png", f"{ref.label}: minimal RMS distortion",
                                 paper_value("szegedy2014", "table1", ref.spec, "distortion")
                                 if ref.split == "train" else None)
            return {"model": ref.label, "n_attacked": int(len(chosen)), "test_indices": chosen.tolist(),
                    "clean_errors_skipped": n_clean_errors_skipped, "success_rate": float(ok.float().mean()),
                    "mean_distortion": float(np.mean(dist)) if dist.size else float("nan"),
                    "median_distortion": float(np.median(dist)) if dist.size else float("nan"),
                    "attack_params": result.params, "attack_wall_s": result.wall_time}

        return self.stage(f"attack {ref.label}", inputs, compute, collective=True)

    def _sharded_lbfgs(self, model: torch.nn.Module, x: torch.Tensor, crit: TargetedMisclassification) -> AttackResult:
        """lbfgs_attack over fixed chunks of ATTACK_CHUNK images, split across torchrun's ranks (parallel.sharded_map);
        every rank gets the whole result back, identical to one process's (params: those of rank 0's chunks, the
        same for every chunk; rank 0 always computes chunk 0)."""
        p, t0 = self.profile, time.perf_counter()
        params: dict[str, Any] = {}

        def chunk(i: int, rows: slice) -> dict[str, torch.Tensor]:
            res = lbfgs_attack(model, x[rows].to(self.device), crit.subset(rows).to(self.device), **p.lbfgs)
            params.update(res.params)
            return res.to_tensors()

        def report(done: int, total: int) -> None:
            if self.progress and done < total:
                self.runner.announce(f"  L-BFGS: {done}/{total} chunks of {ATTACK_CHUNK} images on this process")

        t = sharded_map(chunk, x.shape[0], ATTACK_CHUNK, self.world, progress=report)
        extras = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("extra.")}
        return AttackResult(x=t["x"], x_adv=t["x_adv"], success=t["success"], labels=t["label"],
                            targets=t["target"], pred=t["pred"], confidence=t["confidence"], rms=t["distortion"],
                            l2=t["l2"], linf=t["linf"], extras=extras, attack="lbfgs", params=params,
                            wall_time=time.perf_counter() - t0, clean_error=t["clean_error"].bool())

    def _attack_summary(self, label: str) -> dict[str, Any]:
        """An attack stage's result for results.json, with its figures as paths relative to the run folder."""
        summary, folder = self.attacks[label]
        rel = Path(os.path.relpath(folder, self.runner.root)).as_posix()
        return {**summary, "figures": {"examples": f"{rel}/examples.png", "distortion": f"{rel}/distortion.png"}}

    def _adversarial_set(self, ref: ModelRef) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clean x, set x: adversarial where successful else clean, true labels) read back from disk."""
        _, folder = self.attacks[ref.label]
        t = load_adversarial(folder / "adversarial.safetensors")
        ok = t["success"].bool().view(-1, *([1] * (t["x"].dim() - 1)))
        return t["x"], torch.where(ok, t["x_adv"], t["x"]), t["label"]

    def _cell_stage(self, row: str, row_inputs: dict[str, Any], make_set: SetMaker, col: ModelRef) -> float:
        inputs = {"row": row, "row_inputs": row_inputs, "column": col.label,
                  "column_weights": self.models[col.label]["weights_sha256"]}

        def compute(folder: Path) -> dict[str, Any]:
            x_set, labels = make_set()
            pred = predict(self._load(col), x_set)
            return {"error": float((pred != labels).float().mean()), "n": int(labels.numel())}

        result, _ = self.runner.run(f"transfer {row} -> {col.label}", inputs, compute)
        return float(result["error"])

    # ---- sets fed to the column models: name -> (stage inputs, lazy set maker, row record) ----------------------
    def _row_sets(self, rows: list[ModelRef], magnified: bool = False) -> dict[str, tuple[dict, SetMaker, dict]]:
        sets: dict[str, tuple[dict, SetMaker, dict]] = {}
        for ref in rows:
            summary, _ = self.attacks[ref.label]
            key = {"attack": summary["_stage"]["inputs"], "magnify": MAGNIFY_SIGMA if magnified else None}

            def make(ref: ModelRef = ref, magnified: bool = magnified) -> tuple[torch.Tensor, torch.Tensor]:
                x, x_set, y = self._adversarial_set(ref)
                return (magnify(x, x_set, MAGNIFY_SIGMA) if magnified else x_set), y

            name = display(ref) + (" magnified" if magnified else "")
            if magnified:
                x, x_set, _ = self._adversarial_set(ref)
                dist = float(rms(magnify(x, x_set, MAGNIFY_SIGMA) - x).mean())
            else:
                dist = summary["mean_distortion"]
            kind = "magnified" if magnified else "adversarial"
            sets[name] = (key, make, {"kind": kind, "source": display(ref), "paper_row": name, "distortion": dist})
        return sets

    def _noise_set(self, base: ModelRef, sigma: float, clipped: bool = True) -> tuple[dict, SetMaker, dict]:
        """Gaussian noise of per-pixel σ on the clean images attacked for `base`, clipped to [0, 1] or not."""
        summary, _ = self.attacks[base.label]
        key = {"noise": sigma, "clipped": clipped, "images_of": summary["_stage"]["inputs"], "seed": self.seed}

        def noisy(x: torch.Tensor) -> torch.Tensor:
            return gaussian_noise(x, sigma, seed=self.seed) if clipped else unclipped_gaussian(x, sigma, self.seed)

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            x, _, y = self._adversarial_set(base)
            return noisy(x), y

        x, _, _ = self._adversarial_set(base)
        xn = noisy(x)
        record = {"kind": "gaussian", "sigma": sigma, "clipped": clipped, "images_of": display(base),
                  "distortion": float(rms(xn - x).mean()),
                  "outside_box": float(((xn < 0) | (xn > 1)).float().mean())}
        return key, make, record

    def _matched_sigma(self, base: ModelRef, target_rms: float) -> float:
        """Nominal sigma whose clipped noise has the same mean RMS distortion as `target_rms`."""
        x, _, _ = self._adversarial_set(base)
        sigma = target_rms
        for _ in range(8):
            realised = float(rms(gaussian_noise(x, sigma, seed=self.seed) - x).mean())
            sigma *= target_rms / max(realised, 1e-12)
        return round(sigma, 5)

    def _certify_stage(self, ref: ModelRef) -> dict[str, Any]:
        """A certified lower bound of each attacked image's minimal L2 distortion (CROWN, blindspots.verify), by
        bisection up to the L-BFGS distance (which no certificate can exceed); its mean in Table 1's RMS units
        (L2 / √784) over the images the attack succeeded on, the set behind the distortion column."""
        summary, folder = self.attacks[ref.label]
        inputs = {"attack": summary["_stage"]["inputs"], "method": "crown", "norm": "l2", "steps": CERTIFY_STEPS}

        def compute(_: Path) -> dict[str, Any]:
            from ...verify import UnsupportedLayerError, certified_radius

            t = load_adversarial(folder / "adversarial.safetensors")
            x, y, ok = t["x"], t["label"], t["success"].bool()
            l2 = (t["x_adv"] - x).flatten(1).double().norm(dim=1)
            eps_max = torch.where(ok, l2, torch.full_like(l2, float(x[0].numel()) ** 0.5))
            try:
                radius = certified_radius(self._load(ref).cpu(), x, y, norm="l2", method="crown", eps_max=eps_max,
                                          steps=CERTIFY_STEPS)
            except UnsupportedLayerError as exc:
                return {"supported": False, "reason": str(exc)}
            rms_radius = radius / float(x[0].numel()) ** 0.5
            return {"supported": True, "method": "crown", "mean_certified_rms": float(rms_radius[ok].mean())
                    if bool(ok.any()) else float("nan"), "mean_certified_rms_all": float(rms_radius.mean()),
                    "certified_over_lbfgs": float((radius[ok] / l2[ok]).median()) if bool(ok.any()) else None,
                    "violations": int((radius[ok] > l2[ok] * (1 + 1e-6)).sum()), "n": int(len(y))}

        result, _ = self.runner.run(f"certify {ref.label}", inputs, compute)
        return {k: v for k, v in result.items() if k != "_stage"}

    def _table1(self, refs: list[ModelRef], certified: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        rows = {}
        for ref in refs:
            m, (a, _) = self.models[ref.label], self.attacks[ref.label]
            rows[ref.label] = {"train_error": m["train_error"], "test_error": m["test_error"],
                               "distortion": a["mean_distortion"], "median_distortion": a["median_distortion"],
                               "success_rate": a["success_rate"], "n_attacked": a["n_attacked"],
                               "certified": (certified or {}).get(ref.label)}
        return rows

    def _transfer_table(self, rows: list[ModelRef], cols: list[ModelRef], gaussian_base: ModelRef,
                        magnified: bool = False, sigmas: tuple[float, ...] = GAUSSIAN_SIGMAS) -> dict[str, Any]:
        """Every row's set fed to every column model; a row record holds its errors per column, its realised
        distortion, its kind and the published row whose numbers sit beside it (None: no paper counterpart)."""
        sets = self._row_sets(rows)
        if magnified:
            sets |= self._row_sets(rows, magnified=True)
        for sigma in sigmas:
            key, make, record = self._noise_set(gaussian_base, sigma, clipped=False)
            sets[f"gaussian({sigma:g}) unclipped"] = (key, make, record | {"paper_row": f"gaussian({sigma:g})"})
            key, make, record = self._noise_set(gaussian_base, sigma, clipped=True)
            sets[f"gaussian({sigma:g}) clipped"] = (key, make, record | {"paper_row": None})
        matched: dict[str, tuple[dict, SetMaker, dict]] = {}
        for ref in rows:  # clipped noise with the same realised distortion as each adversarial row
            target = self.attacks[ref.label][0]["mean_distortion"]
            if target is None or not np.isfinite(target):  # no successful example (NaN, stored as null): no match
                continue
            sigma = self._matched_sigma(ref, target)
            key, make, record = self._noise_set(ref, sigma)
            matched[f"matched noise for {display(ref)}"] = (key, make, record | {"kind": "matched noise",
                                                                                 "paper_row": None,
                                                                                 "source": display(ref)})
        col_names = [display(c) for c in cols]
        table: dict[str, Any] = {"columns": col_names, "rows": {}, "matched_noise": {}}
        total = (len(sets) + len(matched)) * len(cols)
        bar = tqdm(total=total, desc="transfer cells", disable=not self.progress, leave=False)
        for target_rows, source in ((table["rows"], sets), (table["matched_noise"], matched)):
            for name, (key, make, record) in source.items():
                cache: dict[str, Any] = {}

                def lazy(make: SetMaker = make, cache: dict[str, Any] = cache) -> Any:
                    if "v" not in cache:
                        cache["v"] = make()
                    return cache["v"]

                errors = {}
                for col, cname in zip(cols, col_names):
                    errors[cname] = self._cell_stage(name, key, lazy, col)
                    bar.update(1)
                target_rows[name] = {"errors": errors, **record}
        bar.close()
        return table
