"""progress.Eta, the one announcer of the long loops: its time left comes from the items computed in this run, it
keeps quiet between lines and once the loop is done."""

from __future__ import annotations

import pytest

from blindspots import progress
from blindspots.progress import Eta, duration, eta_loop


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_left_counts_computed_items_only(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    lines: list[str] = []
    eta = Eta("§4.2", 4, lines.append, unit=" trainings")
    clock.now = 0.5
    eta.step(computed=False, note=" (cached)")  # a cached item: no rate yet
    clock.now = 60.5
    eta.step(note=" (b)")  # one computed item took 60 s: two left, about 120 s
    clock.now = 120.5
    eta.step()
    clock.now = 180.5
    eta.step()  # done: no line
    assert lines == ["  §4.2: 1/4 trainings (cached) in 0 s, about n/a left",
                     "  §4.2: 2/4 trainings (b) in 60 s, about 2.0 min left",
                     "  §4.2: 3/4 trainings in 2.0 min, about 60 s left"]


def test_lines_are_spaced_and_loops_announce(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    lines: list[str] = []
    eta = Eta("attack", 10, lines.append, unit=" chunks", every_s=5.0, indent="    ")
    for t in range(1, 10):
        clock.now = 2.0 * t
        eta.step()
    assert [line.split(":")[1].split(" in")[0] for line in lines] == [" 3/10 chunks", " 6/10 chunks", " 9/10 chunks"]
    said: list[str] = []
    for _ in eta_loop(range(3), "train models", said.append, progress=False):
        clock.now += 2.0
    assert said == ["  train models: 1/3 in 2 s, about 4 s left", "  train models: 2/3 in 4 s, about 2 s left"]
    assert duration(119.4) == "119 s" and duration(150) == "2.5 min"
