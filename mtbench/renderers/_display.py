"""What every human-readable format shows, decided once: row order, cell text, marks, cost columns.

The renderers differ only in markup. Rows and their per-experiment fields (cost, set-up, average rank)
come from ``lb.wide``; each protocol cell comes from ``lb.cells``: ``mean ± CI (count) mark``, the mark
being the leaderboard's own (``mtbench.leaderboard.MARKS``), and the best value bold where a format can.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

DASH = "–"


def missing(value: Any) -> bool:
    """None, NaN and pandas NA all count as 'not recorded'."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 0) -> str:
    return DASH if missing(value) else f"{float(value):,.{digits}f}"


@dataclass
class Row:
    """One experiment: its display fields (a row of ``lb.wide``) and its cells by protocol id."""

    experiment: str
    dataset: str
    fields: dict[str, str]
    cells: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.fields.get("kind", ""))

    def first(self, column: str) -> Any:
        """A per-experiment value of the cells frame (the first recorded one)."""
        for cell in self.cells.values():
            if column in cell and not missing(cell[column]):
                return cell[column]
        return None


def protocol_title(cell: pd.Series) -> str:
    """'5-way 1-shot' (plus '15q' where one dataset has several query counts), as in ``lb.wide``."""
    from ..leaderboard import protocol_label

    title = protocol_label(int(cell["n_way"]), int(cell["k_shot"]))
    return f"{title} {int(cell['n_query'])}q" if str(cell["protocol"]).endswith("q") else title


def protocols(lb: Any) -> dict[str, str]:
    """Protocol id -> title, in table order (by ways, then shots, then queries)."""
    cells = lb.cells.sort_values(["n_way", "k_shot", "n_query"], kind="stable")
    return {str(c["protocol"]): protocol_title(c) for _, c in cells.drop_duplicates("protocol").iterrows()}


def rows(lb: Any) -> list[Row]:
    """One :class:`Row` per experiment, in the order of ``lb.wide``."""
    by_key: dict[tuple[str, str], Row] = {}
    for _, wide in lb.wide.iterrows():
        key = (str(wide["dataset"]), str(wide["experiment"]))
        by_key[key] = Row(key[1], key[0], {str(k): "" if missing(v) else str(v) for k, v in wide.items()})
    for _, cell in lb.cells.iterrows():
        row = by_key.get((str(cell["dataset_label"]), str(cell["experiment"])))
        if row is not None:
            row.cells[str(cell["protocol"])] = cell
    return list(by_key.values())


def value_text(lb: Any, cell: pd.Series, pm: str = " ± ") -> str:
    """``93.7 ± 0.4`` in the metric's display scale."""
    mean = fmt(cell["mean"] * lb.scale, lb.digits)
    if missing(cell.get("ci95")):
        return mean
    return f"{mean}{pm}{fmt(cell['ci95'] * lb.scale, lb.digits)}"


def mark(cell: pd.Series) -> str:
    """The leaderboard's significance mark of a cell (see :data:`mtbench.leaderboard.MARKS`)."""
    from ..leaderboard import cell_mark

    return cell_mark(cell)


def count_text(cell: pd.Series) -> str:
    """What the CI is over: the episode count (one seed) or the seed count."""
    if int(cell.get("n_seeds") or 1) > 1:
        return f"{int(cell['n_seeds'])} seeds"
    return "" if missing(cell.get("n_episodes")) else str(int(cell["n_episodes"]))


def paper_text(lb: Any, cell: pd.Series | None) -> str:
    if cell is None or missing(cell.get("paper")):
        return DASH
    ci = "" if missing(cell.get("paper_ci95")) else f" ± {float(cell['paper_ci95']):g}"
    return f"{float(cell['paper']):g}{ci}"


COST = ("budget", "backbone", "transductive", "train steps", "train s", "adapt ms", "peak MB", "device",
        "allocator", "steps to 90% val", "stale")


def cost(row: Row) -> dict[str, str]:
    """Training and adaptation cost and set-up of an experiment, as ``lb.wide`` formats them."""
    return {name: row.fields[name] or DASH for name in COST if name in row.fields}


def cell_text(lb: Any, cell: pd.Series | None, *, esc: Any = str, bold: Any = str, count: bool = True) -> str:
    """``93.7 ± 0.4 (600) =``: value (bold if best), measurement count, significance mark."""
    if cell is None:
        return esc(DASH)
    value = esc(value_text(lb, cell))
    parts = [bold(value) if bool(cell.get("best")) else value]
    if count and count_text(cell):
        parts.append(f"({esc(count_text(cell))})")
    parts.append(esc(mark(cell)))
    return " ".join(p for p in parts if p)


def has_paper(lb: Any, protocol: str) -> bool:
    cells = lb.cells[lb.cells["protocol"] == protocol]
    return "paper" in cells and cells["paper"].notna().any()


def deviations(row: Row) -> list[str]:
    """Every recorded deviation from the paper's setting, over the row's cells, without repeats."""
    found: dict[str, None] = {}
    for cell in row.cells.values():
        for item in cell.get("deviations") or ():
            found[str(item)] = None
    return list(found)


def paper_sources(lb: Any) -> list[str]:
    cells = lb.cells
    if "paper_source" not in cells:
        return []
    hits = cells[cells["paper"].notna() & cells["paper_source"].astype(bool)] if "paper" in cells else cells[:0]
    return list(dict.fromkeys(f"{c['algorithm']} {protocol_title(c)}: {c['paper_source']}"
                              for _, c in hits.iterrows()))


def provenance_lines(lb: Any) -> list[str]:
    """``key: value`` per provenance entry (lists joined with commas)."""
    return [f"{key}: {', '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
            for key, value in (lb.provenance or {}).items()]
