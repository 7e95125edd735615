"""The papers' published numbers, read from the one reference data file shipped with the package."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def published() -> dict[str, Any]:
    """All published numbers (fractions, not percent); used only for the reports' "paper" column."""
    text = resources.files(__package__).joinpath("published.json").read_text(encoding="utf-8")
    return json.loads(text)


def paper_value(*path: str) -> float | None:
    """A published number by its path, e.g. paper_value("szegedy2014", "table1", "FC10(1)", "test_error")."""
    node: Any = published()
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None
