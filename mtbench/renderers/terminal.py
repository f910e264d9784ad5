"""Terminal (rich): one scores table per dataset, a cost table, then the notes; fits 100 columns.

Algorithm and dataset labels are what a reader compares (``maml``, ``maml-fo``, ``maml-l2sp``), so they
are never cut: their column is as wide as the longest label and does not wrap. The numbers wrap instead
(value on one line, count and paper figure on the next), the dataset becomes the table's title rather
than a column, cost figures are folded into three columns, and protocols that still do not fit move to
a further table.
"""
from __future__ import annotations

import io
import shutil
from typing import Any

from ..hookspecs import hookimpl
from . import Renderer
from . import _display as d

WIDTH = 100  # text output (pipes, files): what a reader's terminal is assumed to show
PROTOCOL_MIN = 10  # narrowest useful protocol column: '93.7 ± 0.4', its mark wrapped below
COLUMN_GAP = 3  # padding and rule between two columns


def _table(title: str | None, first: str, label_width: int):
    from rich import box
    from rich.table import Table

    from rich.text import Text

    table = Table(title=Text(title) if title else None, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True,
                  show_edge=False, pad_edge=False, title_justify="left", expand=False)
    table.add_column(first, no_wrap=True, min_width=label_width, overflow="ignore")
    return table


def _cell(lb: Any, row: d.Row, protocol: str) -> Any:
    from rich.text import Text

    cell = row.cells.get(protocol)
    if cell is None:
        return Text(d.DASH, style="dim")
    text = Text(d.value_text(lb, cell), style="bold" if bool(cell.get("best")) else "")
    if d.mark(cell):
        text.append(" " + d.mark(cell))
    text.append(f"\n({d.count_text(cell)})", style="dim")
    if not d.missing(cell.get("paper")):
        text.append(f"\npaper {d.paper_text(lb, cell)}", style="dim")
    return text


def protocol_chunks(protocols: list[str], label_width: int, width: int = WIDTH) -> list[list[str]]:
    """Split protocols so that label column + protocol columns + rank fit ``width``."""
    room = width - label_width - 2 * COLUMN_GAP - len("rank")
    per_table = max(1, room // (PROTOCOL_MIN + COLUMN_GAP))
    return [protocols[i:i + per_table] for i in range(0, len(protocols), per_table)]


def _label_width(rows: list[d.Row]) -> int:
    return max(len("experiment"), *(len(r.experiment) for r in rows))


def scores(lb: Any, rows: list[d.Row], width: int = WIDTH) -> list[Any]:
    from rich.text import Text

    tables, titles = [], d.protocols(lb)
    for dataset in dict.fromkeys(r.dataset for r in rows):
        mine = [r for r in rows if r.dataset == dataset]
        protocols = [p for p in titles if any(p in r.cells for r in mine)]
        for chunk in protocol_chunks(protocols, _label_width(rows), width):
            table = _table(f"{lb.title} · {dataset}" if lb.title else dataset, "experiment", _label_width(rows))
            for p in chunk:
                table.add_column(titles[p], justify="right", min_width=PROTOCOL_MIN, overflow="fold")
            table.add_column("rank", justify="right", no_wrap=True)
            for r in mine:
                table.add_row(Text(r.experiment), *(_cell(lb, r, p) for p in chunk), r.fields.get("rank", d.DASH))
            tables.append(table)
    return tables


def costs(rows: list[d.Row]) -> Any:
    from rich.text import Text

    table = _table("cost and set-up", "experiment", _label_width(rows))
    for name in ("set-up", "training", "adapt / peak"):
        table.add_column(name, overflow="fold")
    for r in rows:
        c = d.cost(r)
        setup = [r.kind, c.get("budget"), c.get("backbone")]
        setup += ["transductive"] if c.get("transductive") == "yes" else []
        setup += ["stale"] if c.get("stale", d.DASH) != d.DASH else []
        training = f"{c.get('train steps', d.DASH)} steps, {c.get('train s', d.DASH)} s"
        if c.get("allocator", d.DASH) != d.DASH:  # shown only when rows differ in it: times are not comparable
            training += f" ({c['allocator']} allocator)"
        if c.get("steps to 90% val", d.DASH) != d.DASH:
            training += f"; 90% val at {c['steps to 90% val']}"
        table.add_row(Text(r.experiment), Text(", ".join(x for x in setup if x)), Text(training),
                      Text(f"{c.get('adapt ms', d.DASH)} ms/ep, {c.get('peak MB', d.DASH)} MB"))
    return table


def renderables(lb: Any, width: int | None = None) -> list[Any]:
    """Tables and notes; ``width`` defaults to the terminal's (what rich prints into)."""
    from rich.text import Text

    width = width or shutil.get_terminal_size((WIDTH, 24)).columns
    if lb.cells.empty:
        return [Text(f"{lb.title}: (no results)" if lb.title else "(no results)")]
    rows = d.rows(lb)
    notes = [*lb.notes, *d.provenance_lines(lb)]
    return [*scores(lb, rows, width), costs(rows), Text("\n".join(notes), style="dim")]


def render(lb: Any) -> str:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=WIDTH, color_system=None, force_terminal=False, highlight=False)
    for item in renderables(lb, WIDTH):
        console.print(item)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"


@hookimpl
def register_renderers(register):
    register(Renderer("terminal", ".txt", render, description="rich tables for a terminal (100 columns as text)",
                      console=renderables))
