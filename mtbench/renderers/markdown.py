"""Markdown (GitHub flavour): the scores table with marks, the cost table, notes and provenance.

Labels come from plugins and result files, so every cell is escaped: ``|`` would split a cell, ``<`` could
open raw HTML, ``*`` and backticks would change emphasis.
"""
from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from . import Renderer
from . import _display as d

_ESCAPES = {"\\": "\\\\", "|": "\\|", "*": "\\*", "`": "\\`", "[": "\\[", "]": "\\]", "&": "&amp;", "<": "&lt;",
            ">": "&gt;"}


def esc(value: Any) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in str(value)).replace("\n", " ")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def scores(lb: Any, rows: list[d.Row]) -> list[str]:
    protocols = d.protocols(lb)
    header = ["dataset", "experiment", "kind"]
    for pid, title in protocols.items():
        header += [title] + ([f"{title} paper"] if d.has_paper(lb, pid) else [])
    header.append("rank")
    body = []
    for row in rows:
        line = [esc(row.dataset), esc(row.experiment), esc(row.kind)]
        for pid in protocols:
            cell = row.cells.get(pid)
            line.append(d.cell_text(lb, cell, esc=esc, bold=lambda s: f"**{s}**"))
            if d.has_paper(lb, pid):
                line.append(esc(d.paper_text(lb, cell)))
        line.append(esc(row.fields.get("rank", d.DASH)))
        body.append(line)
    return _table(header, body)


def costs(rows: list[d.Row]) -> list[str]:
    header = ["dataset", "experiment", *d.cost(rows[0])]
    return _table(header, [[esc(r.dataset), esc(r.experiment), *(esc(v) for v in d.cost(r).values())] for r in rows])


def notes(lb: Any, rows: list[d.Row]) -> list[str]:
    lines = list(lb.notes)
    for row in rows:
        lines += [f"{row.experiment}: {item}" for item in d.deviations(row)]
    lines += [f"Paper {src}" for src in d.paper_sources(lb)]
    return [f"- {esc(line)}" for line in lines]


def render(lb: Any) -> str:
    out = [f"# {esc(lb.title)}", ""] if lb.title else []
    if lb.cells.empty:
        return "\n".join(out + ["(no results)", ""])
    rows = d.rows(lb)
    out += [*scores(lb, rows), "", "## Cost and setup", "", *costs(rows), "", "## Notes", "", *notes(lb, rows)]
    out += ["", "## Provenance", "", *(f"- {esc(line)}" for line in d.provenance_lines(lb))]
    return "\n".join(out) + "\n"


@hookimpl
def register_renderers(register):
    register(Renderer("markdown", ".md", render, description="GitHub Markdown: table, marks, notes, provenance"))
