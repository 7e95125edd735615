"""Stage keys follow what each kind of stage runs (issue 20): the files a stage's compute actually executes, traced
on tiny real runs, lie in its kind's declared parts; a change to one attack re-keys only the stages that run it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import blindspots.io
from blindspots.stages import STAGE_SOURCE_EXCLUDE, StageRunner, StageSource

PACKAGE = blindspots.io.SOURCE_ROOT
PAPER_NUMBERS = {"report/reference.py"}  # the one excluded file a stage may run (see STAGE_SOURCE_EXCLUDE's comment)


class TracingRunner(StageRunner):
    """A StageRunner that records, per stage, the package files whose Python functions its compute called (every
    thread the compute starts included). Module bodies (`<module>`, run by an import during the compute) are not
    counted: they define functions, and a stage's result depends on the functions it calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ran: dict[str, set[str]] = {}

    def run(self, name: str, inputs: dict[str, Any], compute: Callable[[Path], dict[str, Any]]) -> Any:
        seen: set[str] = set()
        root = str(PACKAGE) + "/"
        codes: set[Any] = set()

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                code = frame.f_code
                if code not in codes:
                    codes.add(code)
                    if code.co_filename.startswith(root) and code.co_name != "<module>":
                        seen.add(code.co_filename[len(root):])

        def traced(folder: Path) -> dict[str, Any]:
            threading.setprofile(profile)
            sys.setprofile(profile)
            try:
                return compute(folder)
            finally:
                sys.setprofile(None)
                threading.setprofile(None)  # type: ignore[arg-type]

        out = super().run(name, inputs, traced)
        self.ran[name] = seen
        return out


def _kind(sources: Mapping[str, StageSource], name: str) -> str | None:
    kinds = [k for k in sources if name.startswith(k)]
    return max(kinds, key=len) if kinds else None


def _outside(runner: TracingRunner, sources: Mapping[str, StageSource]) -> dict[str, list[str]]:
    """Per traced stage, the files it ran that its key does not hash: outside its kind's parts, or left out of every
    stage key (STAGE_SOURCE_EXCLUDE is for code no stage runs, like the report; a figure a stage draws is its work)."""
    out = {}
    for name, ran in runner.ran.items():
        kind = _kind(sources, name)
        assert kind is not None, f"stage {name!r} has no declared kind"
        parts = set(sources[kind].parts())
        out[name] = sorted(f for f in ran - PAPER_NUMBERS if f not in parts
                           or any(f == e or f.startswith(e.rstrip("/") + "/") for e in STAGE_SOURCE_EXCLUDE))
    return out


def test_each_stage_kind_runs_only_its_declared_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny real runs (200 training images, 1 epoch, a few attacked images) of Szegedy's train, L-BFGS attack,
    transfer, certify and §3 units stages, Goodfellow's train and FGSM stages, and the audit's clean, minimal,
    curves and units stages, each traced: every package file whose functions a stage ran must lie in its kind's
    parts (or be left out of every stage key, like the report)."""
    import blindspots.audit.runner as audit_runner
    from blindspots.audit import AuditConfig, Effort
    from blindspots.audit.adaptive import adapt
    from blindspots.audit.analysis import units_stage
    from blindspots.audit.attacks import clean_stage, curves_stage, minimal_l2_stage, minimal_linf_stage
    from blindspots.audit.common import Ctx
    from blindspots.audit.models import load_models
    from blindspots.data import load_eval_data, load_mnist
    from blindspots.experiments import goodfellow2015 as gf
    from blindspots.experiments.goodfellow2015.experiment import STAGE_SOURCES as GOODFELLOW
    from blindspots.experiments.szegedy2014 import units as szegedy_units
    from blindspots.experiments.szegedy2014.experiment import STAGE_SOURCES as SZEGEDY, Szegedy2014
    from blindspots.experiments.szegedy2014.profiles import PROFILES
    from blindspots.experiments.szegedy2014.tables import model_refs
    from blindspots.models.external import LoadedModel
    from blindspots.parallel import World

    quiet = {"announce": lambda s: None}
    sz = Szegedy2014(tmp_path / "sz", replace(PROFILES["quick"], train_subset=200, n_attack=4,
                                              lbfgs={"search_steps": 2}, epochs=1), progress=False, **quiet)
    sz.runner = TracingRunner(tmp_path / "sz", sources=SZEGEDY, **quiet)
    ref = next(r for r in model_refs() if r.label == "FC100-100-10")
    sz.models[ref.label] = sz._train_stage(ref)
    sz.attacks[ref.label] = sz._attack_stage(ref)
    (row, (key, make, _)), = sz._row_sets([ref], magnified=True).items()
    sz._cell_stage(row, key, make, ref)
    key, make, _ = sz._noise_set(ref, 0.1)
    sz._cell_stage("noise 0.1", key, make, ref)
    sz._certify_stage(ref)
    monkeypatch.setattr(szegedy_units, "UNIT_MODELS", ("FC100-100-10",))
    szegedy_units.units_section(sz.runner, replace(PROFILES["quick"].sections, train_subset=200, epochs=1,
                                                   unit_images=100, n_directions=3))

    g = gf.Goodfellow2015(tmp_path / "gf", replace(gf.PROFILES["quick"], store_subset=200, n_attack=20),
                          progress=False, **quiet)
    g.runner = TracingRunner(tmp_path / "gf", sources=GOODFELLOW, **quiet)
    net = gf.NETS[0]
    g.models[net.key] = g._store_stage(net)
    test = load_mnist("test", subset=20)
    g._fgsm_stage(net.key, net.label, lambda: g._load(net), lambda: (test.images, test.labels, test.indices),
                  net.independent_outputs, 20)

    small = Effort(pgd_steps=2, apgd_steps=2, minimal_l2={"steps": 2, "lanes": 1}, lbfgs_images=2, bisect_rounds=1,
                   bisect_steps=2, restarts=1, unit_directions=5, square_queries=10, apgd_targets=1)
    monkeypatch.setattr(audit_runner, "StageRunner", TracingRunner)
    config = AuditConfig([LoadedModel("fc", sz._load(ref).cpu(), "the Szegedy train stage's")], n=8,
                         out=tmp_path / "audit", eps_linf=(0.1,), eps_l2=(1.0,),
                         effort=small, progress=False)
    runner = audit_runner.AuditRunner(config.out, World(), progress=False, **quiet)
    data = load_eval_data("mnist", n=8)
    model = load_models(config, data.images)[0]
    ctx = Ctx(config, runner, data.images, data.labels, model, {"name": data.name, "n": 8, "n_classes": 10})
    clean = clean_stage(ctx)
    adapt(ctx, clean)
    minimal = {"l2": minimal_l2_stage(ctx, clean)[0], "linf": minimal_linf_stage(ctx, clean)[0]}
    curves_stage(ctx, clean, minimal)
    units_stage(ctx)

    traced = {"szegedy2014": (sz.runner, SZEGEDY), "goodfellow2015": (g.runner, GOODFELLOW),
              "audit": (runner.stages, audit_runner.AUDIT_STAGE_SOURCES)}
    outside: dict[str, list[str]] = {}
    for what, (ran, sources) in traced.items():
        assert isinstance(ran, TracingRunner)
        for name, files in _outside(ran, sources).items():
            assert ran.ran[name], (what, name)  # the trace saw the stage's work
            outside[f"{what}: {name}"] = files
    assert not {k: v for k, v in outside.items() if v}, outside
    kinds = {(what, _kind(sources, name)) for what, (ran, sources) in traced.items() for name in ran.ran}
    assert {("szegedy2014", k) for k in ("train ", "attack ", "transfer ", "certify ", "units ")} <= kinds
    assert {("goodfellow2015", "train "), ("goodfellow2015", "fgsm "), ("audit", "curves-")} <= kinds


def test_an_attack_change_re_keys_only_the_stages_that_run_it(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On edited copies of the package: an attack's file re-keys the stage kinds that run it and leaves training,
    units and the stages of other attacks alone; the stage machinery re-keys everything; report code nothing."""
    from test_reliability import _package_copy

    from blindspots.audit.runner import AUDIT_STAGE_SOURCES
    from blindspots.experiments.goodfellow2015.experiment import STAGE_SOURCES as GOODFELLOW
    from blindspots.experiments.szegedy2014.experiment import STAGE_SOURCES as SZEGEDY

    stages = {"szegedy2014": (SZEGEDY, ("train FC100", "attack FC100", "transfer FC100 -> FC10(1)", "certify FC100",
                                        "units CNN relu3", "bounds CNN", "s4.2 train plain seed 0",
                                        "minimal train 20-20", "minimal exact 20-20")),
              "goodfellow2015": (GOODFELLOW, ("train maxout s0", "early-stop maxout s0", "fixed ens plain s0",
                                              "train logreg37",
                                              "fgsm maxout", "ensemble", "transfer", "rubbish")),
              "audit": (AUDIT_STAGE_SOURCES, ("clean-m", "minimal-l2-m", "minimal-linf-m", "curves-m",
                                              "lipschitz-m", "units-m", "sanity-m", "transfer", "bounds-m",
                                              "verdict-m"))}
    runners = {what: StageRunner(tmp_path / what, announce=lambda s: None, sources=sources)
               for what, (sources, _) in stages.items()}

    def keys(root: Path) -> dict[str, str]:
        monkeypatch.setattr(blindspots.io, "SOURCE_ROOT", root)
        return {f"{what}: {name}": runners[what].folder(name, {"n": 5}).name
                for what, (_, names) in stages.items() for name in names}

    def changed(edit: str) -> set[str]:
        after = keys(_package_copy(tmp_path, edit.replace("/", "_"), edit))
        return {k for k in base if after[k] != base[k]}

    base = keys(_package_copy(tmp_path, "base"))
    assert changed("experiments/szegedy2014/report.py") == set()
    assert changed("audit/report.py") == set()
    assert changed("stages.py") == set(base)
    assert changed("attacks/square.py") == {"szegedy2014: minimal exact 20-20", "audit: sanity-m", "audit: verdict-m"}
    lbfgs = changed("attacks/lbfgs.py")
    assert {"szegedy2014: attack FC100", "szegedy2014: transfer FC100 -> FC10(1)", "szegedy2014: certify FC100",
            "szegedy2014: minimal exact 20-20", "audit: minimal-l2-m", "audit: curves-m"} <= lbfgs
    assert not {"szegedy2014: train FC100", "szegedy2014: units CNN relu3", "audit: clean-m", "audit: units-m",
                "audit: minimal-linf-m", "goodfellow2015: fgsm maxout", "goodfellow2015: rubbish"} & lbfgs
    fgsm = changed("attacks/fgsm.py")
    assert "goodfellow2015: fgsm maxout" in fgsm and "audit: minimal-linf-m" in fgsm
    assert not {"szegedy2014: train FC100", "szegedy2014: units CNN relu3", "szegedy2014: attack FC100",
                "audit: clean-m", "audit: minimal-l2-m"} & fgsm
