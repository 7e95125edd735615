"""Copy a finished run's report into the repository's `results/<experiment>-<profile>/`, with its provenance.

What is copied: report.md, results.json and every figure report.md links to (same relative paths, so the links
work), plus provenance.json (experiment, profile, the exact command, the git commit, the wall time). report.md
is a pure function of results.json (`build_report(results)`), so a test can check the two still agree."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..io import write_json_atomic

PROVENANCE = "provenance.json"
_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def figure_links(markdown: str) -> list[str]:
    """Relative paths of the images a Markdown report shows."""
    return _LINK.findall(markdown)


def git_commit(where: Path | None = None) -> str | None:
    """The commit checked out where the code runs (with "-dirty" for uncommitted changes), None outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def publish(run_dir: str | Path, dest: str | Path, *, experiment: str, profile: str, command: str,
            wall_time_s: float, commit: str | None = None) -> Path:
    """Copy the run's report, results and figures to `dest` (replaced whole) and write its provenance."""
    run_dir, dest = Path(run_dir), Path(dest)
    report = run_dir / "report.md"
    if not report.is_file() or not (run_dir / "results.json").is_file():
        raise OutputError(f"{run_dir} holds no finished report (report.md and results.json); run the experiment first.")
    markdown = report.read_text(encoding="utf-8")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("report.md", "results.json"):
        shutil.copy2(run_dir / name, tmp / name)
    for link in figure_links(markdown):
        target = tmp / link
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / link, target)
    meta: dict[str, Any] = {"experiment": experiment, "profile": profile, "command": command,
                            "commit": commit if commit is not None else git_commit(),
                            "wall_time_s": round(wall_time_s, 1)}
    write_json_atomic(tmp / PROVENANCE, meta, sort_keys=False)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


# keys whose values say how or where a run ran, not what it found: left out of `result_differences` (descriptions:
# prose about the run's settings, e.g. the profile's, which follows its fields)
RUN_KEYS = ("wall", "time", "stages", "figures", "figure", "checkpoint", "path", "file", "folder", "sha256",
            "versions", "commit", "command", "device", "seconds", "description")


def result_differences(ours: Any, committed: Any, *, abs_tol: float = 0.0, rel_tol: float = 0.0,
                       where: str = "") -> list[str]:
    """Every number of `committed` (a results.json) that `ours` does not reproduce within the tolerances (|a − b| ≤
    abs_tol + rel_tol·|b|), as 'path: ours vs committed' lines; keys about how the run ran (RUN_KEYS and *_s: wall
    times, stage logs, paths, hashes, versions) are left out, and keys only `ours` has are new results, not differences."""
    if isinstance(committed, dict):
        if not isinstance(ours, dict):
            return [f"{where}: {type(ours).__name__} vs an object"]
        out: list[str] = []
        for key, value in committed.items():
            if key.endswith("_s") or any(k in key for k in RUN_KEYS):  # "_s": seconds (wall_s, compute_s)
                continue
            here = f"{where}.{key}" if where else key
            out += [f"{here}: missing"] if key not in ours else result_differences(
                ours[key], value, abs_tol=abs_tol, rel_tol=rel_tol, where=here)
        return out
    if isinstance(committed, list):
        if not isinstance(ours, list) or len(ours) != len(committed):
            return [f"{where}: {len(ours) if isinstance(ours, list) else ours!r} items vs {len(committed)}"]
        return [d for i, (a, b) in enumerate(zip(ours, committed))
                for d in result_differences(a, b, abs_tol=abs_tol, rel_tol=rel_tol, where=f"{where}[{i}]")]
    if isinstance(committed, bool) or not isinstance(committed, (int, float)):
        return [] if ours == committed else [f"{where}: {ours!r} vs {committed!r}"]
    if not isinstance(ours, (int, float)) or isinstance(ours, bool):
        return [f"{where}: {ours!r} vs {committed!r}"]
    if committed != committed:  # NaN stays NaN
        return [] if ours != ours else [f"{where}: {ours!r} vs NaN"]
    return [] if abs(ours - committed) <= abs_tol + rel_tol * abs(committed) else [f"{where}: {ours!r} vs {committed!r}"]


def read_provenance(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / PROVENANCE).read_text(encoding="utf-8"))


__all__ = ["publish", "figure_links", "git_commit", "read_provenance", "result_differences", "PROVENANCE"]
