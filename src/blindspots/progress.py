"""Progress lines with an estimated time left, for the long loops of a run (trainings, attacks, chunks of images):
one announcer shared by the papers' experiments and the audit, so every loop speaks the same way."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def duration(seconds: float) -> str:
    """`seconds` as "42 s", or "3.5 min" from two minutes on."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Eta:
    """Counts the finished items of a loop of `total` and announces "desc: done/total unit in T, about L left".
    The time left is estimated from the items computed in this run only (`step(computed=False)` for an item
    reused from a cache, which would make the estimate too hopeful); at most one line every `every_s` seconds,
    none once the loop is done."""

    def __init__(self, desc: str, total: int, announce: Callable[[str], None], *, unit: str = "",
                 every_s: float = 0.0, indent: str = "  ") -> None:
        self.desc, self.total, self.announce, self.unit, self.every_s, self.indent = (desc, total, announce, unit,
                                                                                       every_s, indent)
        self.done, self.computed, self.spent = 0, 0, 0.0
        self.t0 = self._last = self._said = time.perf_counter()

    def step(self, n: int = 1, *, computed: bool = True, note: str = "") -> None:
        """`n` more items finished (computed in this run, or not); `note` names them in the line."""
        now = time.perf_counter()
        self.done += n
        if computed:
            self.computed += n
            self.spent += now - self._last
        self._last = now
        if self.done >= self.total or now - self._said < self.every_s:
            return
        self._said = now
        left = duration(self.spent / self.computed * (self.total - self.done)) if self.computed else "n/a"
        self.announce(f"{self.indent}{self.desc}: {self.done}/{self.total}{self.unit}{note} in "
                      f"{duration(now - self.t0)}, about {left} left")


def eta_loop(items: Iterable[T], desc: str, announce: Callable[[str], None], progress: bool) -> Iterator[T]:
    """Iterate with a progress bar (if `progress`), announcing the time so far and left after each item that
    finishes more than a second after the previous line (also without the bar)."""
    items = list(items)
    eta = Eta(desc, len(items), announce, every_s=1.0)
    for item in tqdm(items, desc=desc, disable=not progress, leave=False):
        yield item
        eta.step()


__all__ = ["Eta", "eta_loop", "duration"]
