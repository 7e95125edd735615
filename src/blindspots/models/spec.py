"""Model spec strings (`FC10(1e-4)`, `FC100-100-10`, `AE400-10`, `CNN`, `MAXOUT`, `RBF`) and their parser."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SpecError

VALID_FORMS = (
    "FC10(λ)            softmax on raw pixels with weight decay λ, e.g. FC10(1e-4), FC10(1)",
    "FC<h1>-...-10[(λ)] fully connected sigmoid net, e.g. FC100-100-10, FC123-456-10(1e-5)",
    "AE<h>-10[(λ)]      softmax on the frozen code of a <h>-unit sigmoid autoencoder, e.g. AE400-10",
    "CNN                small conv net: conv-ReLU-pool x2, FC100, softmax",
    "MAXOUT[<units>]    Goodfellow's MNIST maxout net: 2 x <units> (default 240) x 5 pieces, dropout, e.g. MAXOUT1600",
    "RBF                Goodfellow's shallow RBF net: one Gaussian unit per class",
)
N_CLASSES = 10

_FC = re.compile(r"^FC((?:\d+-)*)10(?:\(([^()]+)\))?$", re.IGNORECASE)
_AE = re.compile(r"^AE(\d+)-10(?:\(([^()]+)\))?$", re.IGNORECASE)
_NAMED = {"CNN": "cnn", "MAXOUT": "maxout", "RBF": "rbf"}
_MAXOUT = re.compile(r"^MAXOUT(\d+)(?:\(([^()]+)\))?$", re.IGNORECASE)
MAXOUT_UNITS = 240  # the width of the paper's "original maxout network" (spec MAXOUT)


def format_decay(lam: float) -> str:
    """Short, stable text for a decay value: 1e-4, 1e-2, 1, 5e-3."""
    mantissa, exp = f"{lam:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    e = int(exp)
    return mantissa if e == 0 else f"{mantissa}e{e}"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: the architecture family, hidden widths and weight decay λ (None = recipe default)."""

    kind: str
    hidden: tuple[int, ...] = ()  # FC/AE widths; a maxout width other than 240
    weight_decay: float | None = None

    @property
    def name(self) -> str:
        """Canonical spec string; parsing it gives back this spec."""
        decay = "" if self.weight_decay is None else f"({format_decay(self.weight_decay)})"
        if self.kind == "fc":
            return "FC" + "".join(f"{h}-" for h in self.hidden) + "10" + decay
        if self.kind == "ae":
            return f"AE{self.hidden[0]}-10{decay}"
        if self.kind == "maxout" and self.hidden:
            return f"MAXOUT{self.hidden[0]}{decay}"
        return self.kind.upper() + decay

    @property
    def slug(self) -> str:
        """File-name-safe form of the name: FC10(1e-4) -> FC10_1e-4."""
        return self.name.replace("(", "_").replace(")", "")

    def __str__(self) -> str:
        return self.name


def _bad(text: str, why: str) -> SpecError:
    forms = "\n  ".join(VALID_FORMS)
    return SpecError(f"cannot parse model spec {text!r}: {why}. Valid forms:\n  {forms}")


def _decay(text: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        lam = float(raw)
    except ValueError:
        raise _bad(text, f"weight decay {raw!r} is not a number") from None
    if not lam >= 0 or lam == float("inf"):
        raise _bad(text, f"weight decay must be a finite number >= 0, got {raw}")
    return lam


def parse_spec(text: str | ModelSpec) -> ModelSpec:
    """Parse a spec string; the error lists every valid form."""
    if isinstance(text, ModelSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty spec")
    s = text.strip().replace(" ", "")
    if (m := _FC.match(s)) is not None:
        hidden = tuple(int(h) for h in m.group(1).split("-") if h)
        if any(h <= 0 for h in hidden):
            raise _bad(text, "hidden layer widths must be positive")
        return ModelSpec("fc", hidden, _decay(text, m.group(2)))
    if (m := _AE.match(s)) is not None:
        width = int(m.group(1))
        if width <= 0:
            raise _bad(text, "the code width must be positive")
        return ModelSpec("ae", (width,), _decay(text, m.group(2)))
    if (m := _MAXOUT.match(s)) is not None:
        units = int(m.group(1))
        if units <= 0:
            raise _bad(text, "the maxout width must be positive")
        # the default width keeps its old name (and checkpoints): MAXOUT240 is MAXOUT
        return ModelSpec("maxout", () if units == MAXOUT_UNITS else (units,), _decay(text, m.group(2)))
    base, _, rest = s.partition("(")
    if base.upper() in _NAMED:
        return ModelSpec(_NAMED[base.upper()], (), _decay(text, rest[:-1] if rest.endswith(")") else None)
                         if rest else None)
    if s.upper().startswith("FC") and not re.search(r"10(\(|$)", s):
        raise _bad(text, "the last layer must have 10 units (the 10 MNIST classes)")
    raise _bad(text, "unknown model family")
