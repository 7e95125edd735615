"""The profiles of both papers as the command line picks them: every preset written out whole (no size looked up by
name), `--set` read by each field's declared type and refused up front when it does not fit, descriptions that follow
the fields, and `reproduce --help` listing every profile. No training: these build profiles and parse arguments."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_type_hints

import pytest

from blindspots.attacks import lbfgs_attack
from blindspots.cli import build_parser, main
from blindspots.cli.reproduce import _overrides
from blindspots.errors import SpecError
from blindspots.experiments.goodfellow2015 import PROFILES as GF
from blindspots.experiments.overrides import parse_value, pick_profile
from blindspots.experiments.szegedy2014 import PROFILES as SZ
from blindspots.experiments.szegedy2014.findings import facts
from blindspots.experiments.szegedy2014.profiles import LbfgsOptions


def from_cli(*argv: str) -> Any:
    """The profile `blindspots reproduce …` would run, from its arguments as the CLI parses them."""
    args = build_parser().parse_args(["reproduce", *argv])
    papers = {"szegedy2014": SZ, "goodfellow2015": GF}
    return pick_profile(papers[args.experiment], args.profile, args.n_attack, _overrides(args.overrides))


def test_set_section_sizes_take_effect() -> None:
    """Bug: `--set sections.train_subset=777` (and cnn_train_subset=555) was replaced by 10,000 when the profile
    looked its sizes up again by name; they now hold, in either order beside a top-level train_subset (which the
    sections follow unless set themselves), and survive a later change of another field."""
    p = from_cli("szegedy2014", "--profile", "quick", "--set", "sections.train_subset=777",
                 "--set", "sections.cnn_train_subset=555")
    assert (p.sections.train_subset, p.sections.cnn_train_subset, p.train_subset) == (777, 555, 10_000)
    assert replace(p, n_attack=5).sections.train_subset == 777
    both = ("train_subset=2000", "sections.train_subset=777")
    for order in (both, both[::-1]):
        q = from_cli("szegedy2014", "--profile", "quick", *(a for o in order for a in ("--set", o)))
        assert (q.train_subset, q.sections.train_subset, q.sections.cnn_train_subset) == (2000, 777, 2000), order
    e = from_cli("szegedy2014", "--profile", "quick", "--set", "epochs=3")
    assert e.epochs == e.sections.epochs == 3 and e.sections.cnn_epochs == SZ["quick"].sections.cnn_epochs
    assert replace(SZ["quick"], name="mine").sections == SZ["quick"].sections  # nothing hangs on the name


def test_set_parses_dicts_by_their_declared_options() -> None:
    """Bug: `--set lbfgs=search_steps=2` stored the string 'search_steps=2' in a dict field, and the run failed
    inside the attack stage. Now KEY=VALUE pairs (each value of its option's type), one option by a dot, or refused
    up front naming the field and what it expects."""
    p = from_cli("szegedy2014", "--profile", "quick", "--set", "lbfgs=search_steps=2,max_iter=50,gtol=1e-4")
    assert p.lbfgs == {"search_steps": 2, "max_iter": 50, "gtol": 1e-4}
    assert type(p.lbfgs["search_steps"]) is int and type(p.lbfgs["gtol"]) is float
    one = from_cli("szegedy2014", "--profile", "quick", "--set", "sections.lbfgs.max_iter=7")
    assert one.sections.lbfgs == {"search_steps": 4, "max_iter": 7}  # the other option kept
    assert from_cli("szegedy2014", "--profile", "quick", "--set", "s42.curve_lbfgs=").s42.curve_lbfgs == {}
    for bad, match in (("lbfgs=2", r"--set lbfgs=2: expected KEY=VALUE pairs"),
                       ("lbfgs=serch_steps=2", r"no option 'serch_steps'; options: backend, c_init, search_steps"),
                       ("lbfgs=search_steps=two", r"--set lbfgs.search_steps=two: expected an integer"),
                       ("s42.lbfgs.gtol=tiny", r"--set s42.lbfgs.gtol=tiny: expected a number"),
                       ("sections.lbfgs.batch_size=big", r"expected an integer or none")):
        with pytest.raises(SpecError, match=match):
            from_cli("szegedy2014", "--profile", "quick", "--set", bad)


def test_lbfgs_options_are_the_attacks_own() -> None:
    """The options a profile may set are lbfgs_attack's keyword parameters, with the same types."""
    attack = get_type_hints(lbfgs_attack)
    params = inspect.signature(lbfgs_attack).parameters
    for name, kind in get_type_hints(LbfgsOptions).items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and attack[name] == kind, name


def test_set_parses_every_field_by_its_type() -> None:
    """Ints, floats, bools, none, tuples and nested groups are read as their field's type (never kept as text), and
    a value that does not fit is refused naming the field and the type expected."""
    g = from_cli("goodfellow2015", "--profile", "quick", "--set", "early_stop_curves=yes", "--set", "nets=none",
                 "--set", "l1_coefficients=0.1,0.01", "--set", "wide_units=800", "--set", "n_attack=none")
    assert (g.early_stop_curves, g.nets, g.l1_coefficients, g.wide_units, g.n_attack) == (True, None, (0.1, 0.01),
                                                                                          800, None)
    assert from_cli("goodfellow2015", "--profile", "pair", "--set", "l1_coefficients=").l1_coefficients == ()
    s = from_cli("szegedy2014", "--profile", "paper", "--set", "s42.pool.mix=0.05",
                 "--set", "s42.pool.layers=input,act1", "--set", "train_subset=none", "--set", "parts=s42,minimal",
                 "--set", "minimal.time_limit=30")
    assert (s.s42.pool.mix, s.s42.pool.layers, s.parts, s.minimal.time_limit) == (0.05, ("input", "act1"),
                                                                                  ("s42", "minimal"), 30.0)
    for paper, bad, match in (("goodfellow2015", "seeds=1.5", r"--set seeds=1.5: expected an integer\."),
                              ("goodfellow2015", "early_stop_curves=maybe", r"expected true or false"),
                              ("goodfellow2015", "l1_coefficients=0.1,big", r"l1_coefficients.*a number"),
                              ("goodfellow2015", "name=mine", r"no field 'name'"),
                              ("szegedy2014", "epochs=2.5", r"--set epochs=2.5: expected an integer or none"),
                              ("szegedy2014", "s42.pool=3", r"s42.pool is a group; set one of its fields"),
                              ("szegedy2014", "s42.arms=none,act9", r"arms must include"),
                              ("szegedy2014", "description=x", r"no field 'description'")):
        with pytest.raises(SpecError, match=match):
            from_cli(paper, "--profile", "quick", "--set", bad)


def _as_text(value: Any) -> str:
    """A field's value written as --set takes it."""
    if value is None or isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _leaves(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name != "name":
            out += _leaves(value, f"{prefix}{f.name}.") if is_dataclass(value) else [(prefix + f.name, value)]
    return out


@pytest.mark.parametrize("paper,profiles", [("szegedy2014", SZ), ("goodfellow2015", GF)])
def test_every_field_of_every_preset_round_trips_through_set(paper: str, profiles: dict[str, Any]) -> None:
    """Every field --set can reach, written as text and read back, gives the preset unchanged: each type a profile
    uses has a syntax, and the parsed value has the field's type (an int stays an int, a tuple a tuple)."""
    for name, preset in profiles.items():
        leaves = _leaves(preset)
        assert len(leaves) > 10
        for key, value in leaves:
            assert pick_profile(profiles, name, None, {key: _as_text(value)}) == preset, f"{paper} {name} {key}"


def test_descriptions_follow_the_fields() -> None:
    """Bug: Szegedy's description was a fixed string ("100 images attacked" after --n-attack 500); both papers now
    compute it from the fields, and the run's facts record it."""
    p = from_cli("szegedy2014", "--profile", "quick", "--n-attack", "500", "--set", "train_subset=2000")
    assert "500 test images attacked" in p.description and "100 " not in p.description
    assert "2,000-image subset" in p.description and facts(p, 0, "cpu")["profile_description"] == p.description
    assert "Tables 1-3 not run" in from_cli("szegedy2014", "--profile", "paper", "--set", "parts=s42").description
    g = from_cli("goodfellow2015", "--profile", "quick", "--n-attack", "321", "--set", "seeds=1")
    assert "321 test images attacked" in g.description and "1 seed(s)" in g.description


def test_profile_help_lists_every_profile_of_both_papers(capsys: pytest.CaptureFixture[str]) -> None:
    """Bug: --profile's help was written by hand and missed goodfellow2015's `pair`; it now comes from PROFILES."""
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for paper, profiles in (("szegedy2014", SZ), ("goodfellow2015", GF)):
        assert f"{paper}: {', '.join(profiles)}" in text
    assert "pair" in text


def test_a_bad_set_stops_the_command_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI refuses a --set value that does not fit with one line naming the field, before the run starts."""
    out = tmp_path / "run"
    code = main(["reproduce", "szegedy2014", "--profile", "quick", "--set", "lbfgs=search_steps=two",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--set lbfgs.search_steps=two: expected an integer" in err
    assert not out.exists()


@pytest.mark.parametrize("text,kind,value", [
    ("3", int, 3), (" 2.5 ", float, 2.5), ("1e-3", float, 1e-3), ("No", bool, False), ("x y", str, "x y"),
    ("none", int | None, None), ("4", int | None, 4), ("a=1,b=2.5,c=ce,d=none", dict[str, Any],
                                                     {"a": 1, "b": 2.5, "c": "ce", "d": None}),
    ("a=1, b=2", Mapping[str, int], {"a": 1, "b": 2}), ("1,2", tuple[int, ...], (1, 2)), ("", tuple[str, ...], ()),
    ("1,x", tuple[int, str], (1, "x")), ("b", Literal["a", "b"], "b")])
def test_parse_value_reads_each_type(text: str, kind: Any, value: Any) -> None:
    got = parse_value(text, kind, "f")
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text,kind,expected", [
    ("3.0", int, "an integer"), ("x", float, "a number"), ("2", bool, "true or false"),
    ("c", Literal["a", "b"], "one of a, b"),
    ("1", tuple[int, str], "a comma-separated list of an integer, text"), ("a:1", dict[str, int], "KEY=VALUE pairs"),
    ("a=x", dict[str, int], "--set f.a=x: expected an integer")])
def test_parse_value_refuses_what_does_not_fit(text: str, kind: Any, expected: str) -> None:
    with pytest.raises(SpecError, match=re.escape(expected)):
        parse_value(text, kind, "f")
