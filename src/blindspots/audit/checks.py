"""The audit's per-model checks as a list (`CHECKS`), run in order by `engine.run_audit` as AutoAttack loops over its
attacks. Adding a check: write its stage function in one file, then add one `AuditCheck` entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .adaptive import adapt
from .analysis import lipschitz_stage, sanity_stage, units_stage
from .attacks import L2_ATTACKS, LINF_ATTACKS, DECISION, clean_stage, curves_stage, minimal_l2_stage, \
    minimal_linf_stage
from .common import Ctx
from .gradient_free import curves_skipped

Record = dict[str, Any]


@dataclass(frozen=True)
class AuditCheck:
    """One per-model step of the audit, declared as data: what it is called, what it reads and yields."""

    kind: str  # its stage's name (the StageRunner label is f"{kind}-{model}"; AUDIT_STAGE_SOURCES key "{kind}-")
    part: str  # its name in wall_time_s and in a failure's record
    run: Callable[[Ctx, Record], Any]  # the stage: its record, or (record, folder) where `folder` is set
    record: str | None = None  # its key in results.json's per_model record (None: it stores nothing)
    folder: str | None = None  # its example folder's key in what the verdict reads (None: the verdict reads none)
    settings: tuple[str, ...] = ()  # the AuditConfig fields it reads ("effort.x": a field of config.effort)
    candidates: tuple[str, ...] = ()  # the verdict's adversarial sources it yields (verdict._sources' labels)
    optional: Callable[[str], Record] | None = None  # its record on failure (not fatal); None: failure drops the model
    timed: bool = True  # its time counted in wall_time_s under `part`
    report: str | None = None  # its report section (a function of audit/report.py)
    sanity: str | None = None  # the sanity lines that read it (a function of audit/sanity.py)


def _adapt(ctx: Ctx, rec: Record) -> None:
    """The adaptive attacks the gradient probe calls for (BPDA, EOT, losses): set on ctx for the later checks."""
    adapt(ctx, rec["clean"])
    if ctx.gradient_free:
        ctx.runner.announce(f"  {ctx.model.name}: {ctx.gradient_free}; gradient attacks stand down; HopSkipJump "
                            "and Square (at every ε) run")


def _curves(ctx: Ctx, rec: Record) -> Any:
    if ctx.gradient_free is not None:  # no gradient even through BPDA: APGD stands down (Square runs instead)
        return curves_skipped(ctx, rec["clean"])
    return curves_stage(ctx, rec["clean"], {"l2": rec["minimal_l2"], "linf": rec["minimal_linf"]})


_GRIDS = ("eps_linf", "eps_l2", "bounds", "seed", "fast")
CHECKS: list[AuditCheck] = [
    AuditCheck("clean", "clean", lambda ctx, rec: clean_stage(ctx), record="clean",
               settings=("bounds", "mean", "std", "bpda", "seed", "effort.draws"),
               report="_clean", sanity="_logits_line"),
    AuditCheck("adaptive", "adaptive attacks", _adapt, timed=False, settings=("bpda", "effort.eot_samples")),
    AuditCheck("minimal-l2", "minimal L2", lambda ctx, rec: minimal_l2_stage(ctx, rec["clean"]),
               record="minimal_l2", folder="minimal_l2",
               settings=(*_GRIDS, "effort.minimal_l2", "effort.lbfgs_images", "effort.heavy_macs",
                         "effort.heavy_images", "effort.hsj_images", "effort.hsj_queries",
                         "effort.hsj_queries_unusable"),
               candidates=tuple(f"{a} (clipped)" for a in (*L2_ATTACKS, DECISION)),
               report="_minimal", sanity="model_lines"),
    AuditCheck("minimal-linf", "minimal L∞", lambda ctx, rec: minimal_linf_stage(ctx, rec["clean"]),
               record="minimal_linf", folder="minimal_linf",
               settings=(*_GRIDS, "effort.bisect_images", "effort.bisect_rounds", "effort.bisect_steps",
                         "effort.hsj_images", "effort.hsj_queries", "effort.hsj_queries_unusable"),
               candidates=tuple(f"{a} (clipped)" for a in (*LINF_ATTACKS, DECISION)),
               report="_minimal", sanity="model_lines"),
    AuditCheck("curves", "robust curves", _curves, record="curves", folder="curves",
               settings=(*_GRIDS, "effort.apgd_steps", "effort.apgd_targets", "effort.eot_samples"),
               candidates=("APGD",), report="_curves", sanity="evidence_line"),
    AuditCheck("lipschitz", "lipschitz", lambda ctx, rec: lipschitz_stage(ctx, rec["clean"], rec["minimal_l2"]),
               record="lipschitz", settings=("bounds", "mean", "std"),
               optional=lambda why: {"supported": False, "reason": why, "layers": []}, report="_lipschitz"),
    AuditCheck("units", "units", lambda ctx, rec: units_stage(ctx), record="units",
               settings=("layer", "seed", "effort.units_images", "effort.unit_directions", "effort.unit_k"),
               optional=lambda why: {"skipped": why}, report="_units"),
    AuditCheck("sanity", "sanity runs", lambda ctx, rec: sanity_stage(ctx, rec["clean"], rec["curves"]),
               record="sanity_runs", folder="sanity",
               settings=(*_GRIDS, "effort.pgd_steps", "effort.restarts", "effort.sanity_images",
                         "effort.square_queries", "effort.square_queries_masked"),
               candidates=("PGD per ε", "PGD restarts", "Square"), report="_sanity", sanity="model_lines"),
]


def candidates(checks: list[AuditCheck]) -> tuple[str, ...]:
    """Every adversarial source the checks yield to the verdict, in order (transfer adds 'transfer from M')."""
    return tuple(dict.fromkeys(c for check in checks for c in check.candidates))


__all__ = ["AuditCheck", "CHECKS", "candidates"]
