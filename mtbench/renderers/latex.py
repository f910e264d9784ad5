"""LaTeX: a ``table`` float with a booktabs ``tabular``, for papers; needs only ``\\usepackage{booktabs}``.

Every string from a plugin or a result file goes through :func:`escape`: the ten characters LaTeX treats
specially, the symbols the table itself uses (``±``, ``≈``, ``†``, ``→``, ...) as math, and any other
non-ASCII character reduced to ASCII (pdflatex with its default fonts has no glyph for it otherwise).
The best value of a cell is bold; every cell carries the leaderboard's mark (``=`` for a tie with the best).
"""
from __future__ import annotations

import unicodedata
from typing import Any

from ..hookspecs import hookimpl
from . import Renderer
from . import _display as d

_SPECIAL = {
    "\\": r"$\backslash$", "&": r"\&", "%": r"\%", "$": r"$\$$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"$\sim$", "^": r"\^{}", "<": r"$<$", ">": r"$>$", "|": r"$|$", "\"": "''",
}
_SYMBOLS = {"±": r"$\pm$", "→": r"$\rightarrow$", "≈": r"$\approx$", "†": r"$^\dagger$", "×": r"$\times$",
            "α": r"$\alpha$", "χ": r"$\chi$", "¹": r"$^1$", "²": r"$^2$", "·": r"$\cdot$", "–": "--", "—": "---", "≤": r"$\leq$",
            "≥": r"$\geq$", "…": r"\dots{}", "°": r"$^\circ$", "µ": r"$\mu$"}


def escape(value: Any) -> str:
    """Text that pdflatex prints literally, with the default (OT1, Computer Modern) fonts only."""
    out = []
    for ch in str(value):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _SYMBOLS:
            out.append(_SYMBOLS[ch])
        elif ord(ch) < 128:
            out.append(" " if ch in "\r\n\t" else ch)
        else:
            ascii_form = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append(escape(ascii_form) if ascii_form else "?")
    return "".join(out)


def _header(lb: Any, protocols: dict[str, str]) -> tuple[str, list[str]]:
    names = ["dataset", "experiment"]
    for pid, title in protocols.items():
        names += [title] + (["paper"] if d.has_paper(lb, pid) else [])
    names += ["rank", "train s"]
    return "ll" + "r" * (len(names) - 2), [escape(n) for n in names]


def _line(lb: Any, row: d.Row, protocols: dict[str, str]) -> str:
    cells = [escape(row.dataset), escape(row.experiment)]
    for pid in protocols:
        cell = row.cells.get(pid)
        cells.append(d.cell_text(lb, cell, esc=escape, bold=lambda s: rf"\textbf{{{s}}}", count=False))
        if d.has_paper(lb, pid):
            cells.append(escape(d.paper_text(lb, cell)))
    cells += [escape(row.fields.get("rank") or d.DASH), escape(row.fields.get("train s") or d.DASH)]
    return " & ".join(cells) + r" \\"


def render(lb: Any) -> str:
    protocols, rows = d.protocols(lb), d.rows(lb)
    spec, header = _header(lb, protocols)
    lines = ["% Rendered by `mtbench leaderboard --format latex`; needs \\usepackage{booktabs}.",
             r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{escape(lb.title)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [_line(lb, row, protocols) for row in rows] or [r"\multicolumn{2}{l}{(no results)} \\"]
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", r"\footnotesize",
              " ".join(escape(s) for s in lb.notes), r"\end{table}", ""]
    return "\n".join(lines)


@hookimpl
def register_renderers(register):
    register(Renderer("latex", ".tex", render, description="booktabs table for a paper (best bold, ties marked)"))
