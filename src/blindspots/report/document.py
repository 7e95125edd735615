"""A report as data (sections of text, tables with ours-vs-paper columns, figures), rendered to
Markdown and to a self-contained HTML page (figures embedded as base64), each written atomically."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..io import write_text_atomic
from .format import num

Cell = str | float | int | None


@dataclass
class Table:
    """Rows of cells; floats are formatted by `fmt` ("pct" → 12.3%, "num" → 0.0623)."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    verdict: str = ""  # a sentence computed from the numbers, printed under the table
    fmt: str = "pct"


@dataclass
class Figure:
    path: Path  # relative to the report folder
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: list[str]
    sections: list[Section]


def format_cell(value: Cell, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if fmt == "pct":
        return f"{100 * float(value):.1f}%"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):.4f}"


def to_markdown(report: Report) -> str:
    out = [f"# {report.title}", ""]
    out += [p + "\n" for p in report.intro]
    for sec in report.sections:
        out += [f"## {sec.title}", ""]
        out += [p + "\n" for p in sec.paragraphs]
        for t in sec.tables:
            if t.caption:
                out += [f"**{t.caption}**", ""]
            out.append("| " + " | ".join(t.columns) + " |")
            out.append("|" + "---|" * len(t.columns))
            for row in t.rows:
                out.append("| " + " | ".join(format_cell(c, t.fmt) for c in row) + " |")
            out.append("")
            if t.verdict:
                out += [f"*{t.verdict}*", ""]
        for f in sec.figures:
            out += [f"![{f.caption}]({f.path.as_posix()})", "", f"*{f.caption}*", ""]
    return "\n".join(out)


def _img_tag(root: Path, fig: Figure) -> str:
    data = (root / fig.path).read_bytes()
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(fig.caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.verdict{font-style:italic;color:#145}.caption{font-weight:600}img{max-width:100%}
figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}code{background:#f6f6f6;padding:1px 3px}"""


def to_html(report: Report, root: Path) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>", f"<h1>{esc(report.title)}</h1>"]
    out += [f"<p>{esc(p)}</p>" for p in report.intro]
    for sec in report.sections:
        out.append(f"<h2>{esc(sec.title)}</h2>")
        out += [f"<p>{esc(p)}</p>" for p in sec.paragraphs]
        for t in sec.tables:
            if t.caption:
                out.append(f'<p class="caption">{esc(t.caption)}</p>')
            out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in t.columns) + "</tr>")
            for row in t.rows:
                out.append("<tr>" + "".join(f"<td>{esc(format_cell(c, t.fmt))}</td>" for c in row) + "</tr>")
            out.append("</table>")
            if t.verdict:
                out.append(f'<p class="verdict">{esc(t.verdict)}</p>')
        out += [_img_tag(root, f) for f in sec.figures]
    out.append("</body></html>")
    return "\n".join(out)


def stage_time_line(stages: list[dict]) -> str:
    """One line on a run's stages: how many were computed or reused, their time in this run, and the compute time
    their results cost when they ran (which a fully cached rerun would otherwise hide)."""
    computed = sum(1 for s in stages if s["status"] == "computed")
    this_run = num(sum(float(s["wall_s"]) for s in stages), ".0f")
    known = [float(s["compute_s"]) for s in stages if isinstance(s.get("compute_s"), (int, float))]
    unknown = "" if len(known) == len(stages) else f" ({len(stages) - len(known)} stages not known)"
    return (f"stages: {computed} computed, {len(stages) - computed} reused from cache; stage time this run "
            f"{this_run} s, their original compute time {num(sum(known), '.0f')} s{unknown}")


def run_facts_section(results: dict, extra: list[str] | None = None) -> Section:
    """The run's facts (the choices the paper leaves open, versions, cached vs computed stages, wall time per
    stage in this run and when each stage's result was computed), read from an experiment's results dict."""
    facts = results["facts"]
    paragraphs = [f"{k.replace('_', ' ')}: {v}" for k, v in facts["choices"].items()]
    paragraphs += extra or []
    paragraphs.append("versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    stages = results["stages"]
    paragraphs.append(stage_time_line(stages))
    timing = Table(["part of the run", "wall time this run (s)"],
                   [[k, num(v, ".1f")] for k, v in results["wall_time_s"].items()], "Wall time per part (this run)",
                   fmt="str")
    per_stage = Table(["stage", "status", "this run (s)", "original compute (s)"],
                      [[s["name"], s["status"], num(s["wall_s"], ".1f"), num(s.get("compute_s"), ".1f")]
                       for s in stages],
                      "Wall time per stage: this run, and when its result was computed", fmt="str")
    return Section("Run facts and the choices the paper leaves open", paragraphs, [timing, per_stage])


def write_report(report: Report, folder: Path) -> tuple[Path, Path]:
    """Write report.md and report.html (self-contained) into `folder`, atomically."""
    md = write_text_atomic(folder / "report.md", to_markdown(report))
    page = write_text_atomic(folder / "report.html", to_html(report, folder))
    return md, page
