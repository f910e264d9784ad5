"""HTML: one self-contained report page, to open from disk or serve as is.

One file, no network: charset, CSS and a small vanilla script inline, the plots as inline SVG, and a
Content-Security-Policy that allows no fetch at all and only *this* script (by its hash). The table
sorts when a header is clicked and filters on a text box; each experiment folds out its details
(hyperparameters, paired test, timings, code version, environment).

Every string that comes from a plugin or a result file goes through :func:`e` (``html.escape``); no
data is embedded as JavaScript, so there is no ``</script>`` to break out of. The CSP hash is the second
line of defence, not the first.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
from typing import Any

from ..errors import MtbenchError
from ..hookspecs import hookimpl
from . import Renderer
from . import _display as d

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:90rem;
  padding:0 1rem;color:#1d232a;background:#fff}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #dde}
.lead{color:#555;margin:0 0 1rem}
#filter{font:inherit;padding:.35rem .6rem;width:28rem;max-width:100%;border:1px solid #bbc;border-radius:4px}
.wrap{overflow-x:auto;margin-top:.6rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .55rem;border-bottom:1px solid #e4e6ea;vertical-align:top;text-align:right;white-space:nowrap}
th{position:sticky;top:0;background:#f3f5f8;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.label,th.label{text-align:left}
tbody tr:hover{background:#f7f9fc}
td.best{background:#e7f5e9}td.best .v{font-weight:700}
.n,.paper{color:#667}.rank{font-size:.78em;color:#445;background:#eef;border-radius:3px;padding:0 .25em}
.mark{font-weight:700;color:#0a6b2b}.mark.tied{color:#7a5d00}.mark.unpaired{color:#a33}
details summary{cursor:pointer}details[open]{white-space:normal;max-width:42rem}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.4rem 0;font-size:.9em}
dl.kv dt{color:#556}dl.kv dd{margin:0;word-break:break-word}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
ul.notes li{margin:.2rem 0}
"""

SCRIPT = """
(function () {
  var table = document.getElementById("leaderboard");
  if (!table) { return; }
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function key(row, col, numeric) {
    var cell = row.cells[col], raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (!numeric) { return raw.toLowerCase(); }
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }
  heads.forEach(function (th, col) {
    th.tabIndex = 0;
    th.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); th.click(); }
    });
    th.addEventListener("click", function () {
      var now = th.getAttribute("aria-sort");
      var dir = now ? (now === "ascending" ? "descending" : "ascending") : th.getAttribute("data-first");
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
      var numeric = th.getAttribute("data-type") === "num", sign = dir === "ascending" ? 1 : -1;
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col, numeric), y = key(b, col, numeric);
        if (x === null || y === null) { return (x === null) - (y === null); }
        return x < y ? -sign : x > y ? sign : 0;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var q = filter.value.trim().toLowerCase(), shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      r.hidden = q !== "" && r.getAttribute("data-search").indexOf(q) < 0;
      shown += r.hidden ? 0 : 1;
    });
    document.getElementById("shown").textContent = shown;
  });
})();
"""

PLOT_CAPTIONS = {
    "shots": "Mean with its 95% CI against shots, one line per experiment.",
    "cost": "Mean against training seconds (log scale); the dashed line is the Pareto front.",
    "curves": "Meta-validation during training, averaged over seeds.",
    "cd": "Critical-difference diagram: average ranks over cells; a bar joins experiments whose average ranks "
          "differ by less than the Nemenyi critical difference.",
}
MARK_CLASS = {"*": "best", "=": "tied", "?": "unpaired"}


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'"


def _cell(lb: Any, row: d.Row, pid: str) -> str:
    cell = row.cells.get(pid)
    if cell is None:
        return f'<td data-sort="">{d.DASH}</td>'
    sort = "" if d.missing(cell["mean"]) else f"{float(cell['mean']):.6g}"
    mark = d.mark(cell)
    parts = [f'<span class="v">{e(d.value_text(lb, cell))}</span>', f'<span class="n">({e(d.count_text(cell))})</span>']
    if mark:
        parts.append(f'<span class="mark {MARK_CLASS.get(mark, "")}">{e(mark)}</span>')
    if not d.missing(cell.get("rank")):
        parts.append(f'<span class="rank" title="rank within the cell">#{int(cell["rank"])}</span>')
    best = ' class="best"' if bool(cell.get("best")) else ""
    return f'<td{best} data-sort="{sort}">{" ".join(parts)}</td>'


def _kv(items: dict[str, Any]) -> str:
    rows = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items.items() if not d.missing(v) and v != "")
    return f'<dl class="kv">{rows}</dl>'


def _test_text(lb: Any, cell: Any) -> str:
    """'-0.70 ± 0.25 vs best; Wilcoxon p = 1e-07, t-test p = ..., Holm p = ...; note' (what was recorded)."""
    parts = []
    if not d.missing(cell.get("diff_mean")):
        ci = cell.get("diff_ci95")
        parts.append(f"{d.fmt(cell['diff_mean'] * lb.scale, lb.digits + 1)} ± "
                     f"{d.DASH if d.missing(ci) else d.fmt(ci * lb.scale, lb.digits + 1)} vs best")
    parts += [f"{name} p = {float(cell[key]):.2g}" for name, key in
              (("Wilcoxon", "p_wilcoxon"), ("t-test", "p_ttest"), ("Holm", "p_holm")) if not d.missing(cell.get(key))]
    if cell.get("paired_note"):
        parts.append(str(cell["paired_note"]))
    return "; ".join(parts)


def _details(lb: Any, row: d.Row) -> str:
    first = next(iter(row.cells.values()))
    params = first.get("params") or {}
    tests = {pid: _test_text(lb, cell) for pid, cell in row.cells.items() if not bool(cell.get("best"))}
    env = {"algorithm": first.get("algorithm"), "plugin": first.get("plugin"), "settings": first.get("settings"),
           **d.cost(row), "code version": row.first("code_version"), "git commit": row.first("git_commit"),
           "runs": ", ".join(first.get("run_ids") or ())}
    deviations = "".join(f"<li>{e(x)}</li>" for x in d.deviations(row))
    return ("<details><summary>" + e(row.experiment) + "</summary>"
            + "<strong>hyperparameters</strong>" + _kv({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                                        for k, v in params.items()})
            + (("<strong>paired test</strong>" + _kv(tests)) if tests else "")
            + "<strong>timings and environment</strong>" + _kv(env)
            + (f"<strong>deviations</strong><ul>{deviations}</ul>" if deviations else "") + "</details>")


def table(lb: Any, rows: list[d.Row]) -> str:
    protocols = d.protocols(lb)
    first = "descending" if lb.higher_is_better else "ascending"
    head = ['<th class="label" data-type="text" data-first="ascending">experiment</th>',
            '<th class="label" data-type="text" data-first="ascending">dataset</th>',
            '<th class="label" data-type="text" data-first="ascending">kind</th>']
    for pid, title in protocols.items():
        head.append(f'<th data-type="num" data-first="{first}">{e(title)}</th>')
        if d.has_paper(lb, pid):
            head.append(f'<th data-type="num" data-first="{first}">{e(title)} paper</th>')
    head.append('<th data-type="num" data-first="ascending" title="average rank over cells">rank</th>')
    cost_names = list(d.cost(rows[0])) if rows else []
    head += [f'<th data-type="{"num" if n in NUMERIC else "text"}" data-first="ascending">{e(n)}</th>'
             for n in cost_names]
    body = []
    for row in rows:
        search = " ".join([row.experiment, row.dataset, row.kind, *map(str, d.cost(row).values())]).lower()
        tds = [f'<td class="label" data-sort="{e(row.experiment.lower())}">{_details(lb, row)}</td>',
               f'<td class="label">{e(row.dataset)}</td>', f'<td class="label">{e(row.kind)}</td>']
        for pid in protocols:
            tds.append(_cell(lb, row, pid))
            if d.has_paper(lb, pid):
                cell = row.cells.get(pid)
                paper = None if cell is None else cell.get("paper")
                tds.append(f'<td class="paper" data-sort="{"" if d.missing(paper) else e(paper)}">'
                           f"{e(d.paper_text(lb, cell))}</td>")
        tds.append(f'<td data-sort="{e(row.fields.get("rank", ""))}">{e(row.fields.get("rank", d.DASH))}</td>')
        for name, value in d.cost(row).items():
            tds.append(f'<td data-sort="{e(_number(value))}">{e(value)}</td>')
        body.append(f'<tr data-search="{e(search)}">' + "".join(tds) + "</tr>")
    return ('<table id="leaderboard"><thead><tr>' + "".join(head) + "</tr></thead><tbody>\n"
            + "\n".join(body) + "\n</tbody></table>")


NUMERIC = {"train steps", "train s", "adapt ms", "peak MB", "steps to 90% val"}


def _number(text: str) -> str:
    """The sortable number of a cost cell ('12.6–289' sorts by its first value), else ''."""
    head = str(text).split("–")[0].replace(",", "")
    try:
        return f"{float(head):g}"
    except ValueError:
        return ""


def figures(lb: Any) -> str:
    from .. import plots

    out = []
    for kind, caption in PLOT_CAPTIONS.items():
        try:
            fig = plots.figure(lb, kind)
        except MtbenchError as exc:
            out.append(f'<p class="lead" id="plot-{kind}-missing">No {kind} plot: {e(exc)}</p>')
            continue
        out.append(f'<figure id="plot-{kind}">{plots.svg_markup(fig, kind)}<figcaption>{e(caption)}'
                   "</figcaption></figure>")
    return "\n".join(out)


def _notes(lb: Any, rows: list[d.Row]) -> str:
    lines = list(lb.notes)
    lines += [f"{row.experiment} ({row.dataset}): {item}" for row in rows for item in d.deviations(row)]
    lines += [f"Paper {src}" for src in d.paper_sources(lb)]
    return '<ul class="notes">' + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul>"


def render(lb: Any) -> str:
    rows = d.rows(lb) if not lb.cells.empty else []
    direction = "higher" if lb.higher_is_better else "lower"
    body = [f"<h1>{e(lb.title or 'mtbench leaderboard')}</h1>",
            f'<p class="lead">{e(lb.metric)} ({direction} is better), mean ± 95% CI; suite {e(lb.suite or "all")}; '
            f'<span id="shown">{len(rows)}</span> of {len(rows)} experiments shown. Click a header to sort.</p>',
            '<input id="filter" type="search" placeholder="Filter: experiment, dataset, kind, budget, backbone" '
            'aria-label="filter experiments">']
    if rows:
        body += [f'<div class="wrap">{table(lb, rows)}</div>', "<h2>Plots</h2>", figures(lb),
                 "<h2>Notes</h2>", _notes(lb, rows)]
    else:
        body.append("<p>(no results)</p>")
    body += ["<h2>Provenance</h2>", _kv({str(k): (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
                                        for k, v in (lb.provenance or {}).items()})]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{e(lb.title or 'mtbench leaderboard')}</title>\n<style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


@hookimpl
def register_renderers(register):
    register(Renderer("html", ".html", render, description="self-contained report: sortable table, plots, notes"))
