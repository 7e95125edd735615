"""Checkpoint paths as a reproduction's results.json records them: relative to the run folder, or to the model store
as $BLINDSPOTS_HOME/…, so a published results.json names no folder of the machine that made it (`portable_paths`),
and read back on this machine (`recorded_path`). The stage results keep their absolute paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import home

PATH_KEYS = ("checkpoint", "member_checkpoints")  # keys of results.json whose values are paths of checkpoint files
HOME = "$BLINDSPOTS_HOME"


def portable_paths(results: Any, run: Path, store_home: Path | None = None) -> Any:
    """`results` with each checkpoint path (PATH_KEYS) written relative to the run folder `run`, or as
    $BLINDSPOTS_HOME/… for one in the model store (`store_home`, default io.home()), so results.json names no folder
    of the machine that made it; a path elsewhere is kept. recorded_path reads one back."""
    def portable(text: str) -> str:
        path = Path(text).absolute()  # a stage folder of a run into a relative --out is relative to where it ran
        for root, prefix in ((run.absolute(), ""), ((store_home or home()).absolute(), f"{HOME}/")):
            if path.is_relative_to(root):
                return prefix + path.relative_to(root).as_posix()
        return text

    if isinstance(results, Mapping):
        return {k: (portable(v) if isinstance(v, str) else [portable(p) for p in v] if isinstance(v, list) else v)
                if k in PATH_KEYS else portable_paths(v, run, store_home) for k, v in results.items()}
    if isinstance(results, list):
        return [portable_paths(v, run, store_home) for v in results]
    return results


def recorded_path(text: str, run: Path) -> Path:
    """A checkpoint path as results.json records it (portable_paths), on this machine: under the run folder `run`,
    or the model store for $BLINDSPOTS_HOME/…; an absolute path (results of an older version) as it is."""
    if text.startswith(f"{HOME}/"):
        return home() / text[len(HOME) + 1:]
    return run / text


__all__ = ["PATH_KEYS", "HOME", "portable_paths", "recorded_path"]
