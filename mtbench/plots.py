"""Leaderboard plots (matplotlib, no display needed): what a table of numbers hides.

Four figures, each drawn from a :class:`mtbench.leaderboard.Leaderboard` alone:

* ``shots``: the metric against shots, one line per experiment and one panel per number of ways;
* ``cost``: the metric against training seconds (log scale), with the Pareto front of the experiments no
  other experiment beats on both;
* ``curves``: meta-validation curves against training steps (how many iterations a pretrained start saves);
* ``cd``: the critical-difference diagram (Demšar 2006, JMLR 7:1-30): average ranks over cells, with a bar
  joining experiments whose average ranks differ by less than the Nemenyi critical difference.

Every drawn series carries a ``gid`` unique in its figure (``series-...``, ``pareto-front-<panel>``,
``cd-...``), so tests and the HTML report can find it in the SVG. Figures are built with :class:`matplotlib.figure.Figure`, not ``pyplot``:
no global state, no GUI backend.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from .errors import MtbenchError

KIND_MARKERS = {"meta": "o", "transfer": "s", "joint": "D", "baseline": "^"}
FORMATS = ("png", "svg", "pdf")


def _figure(n_panels: int, n_legend: int, ylabel: str):
    """Panels in rows of three, tall enough for the legend on the right; the y label on the first column."""
    from matplotlib.figure import Figure

    ncols = min(3, n_panels)
    nrows = -(-n_panels // ncols)
    fig = Figure(figsize=(4.6 * ncols + 2.8, max(3.6 * nrows, 0.21 * n_legend + 0.8)), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for extra in axes[n_panels:]:
        fig.delaxes(extra)
    for ax in axes[:n_panels:ncols]:
        ax.set_ylabel(ylabel)
    return fig, axes[:n_panels]


def _panels(frame: Any, column: str, titles: dict[Any, str]) -> list[tuple[str, Any]]:
    """(title, rows) per dataset and value of ``column`` in table order; the dataset named when several."""
    datasets = list(dict.fromkeys(frame["dataset_label"]))
    out = []
    for dataset in datasets:
        mine = frame[frame["dataset_label"] == dataset]
        for value, title in titles.items():
            rows = mine[mine[column] == value]
            if len(rows):
                out.append((f"{dataset} · {title}" if len(datasets) > 1 else title, rows))
    return out


def _colors(lb: Any) -> dict[str, Any]:
    """One stable colour per experiment, in table order, shared by every plot of a report."""
    from matplotlib import colormaps

    names = list(dict.fromkeys(lb.cells["experiment"]))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _protocols(lb: Any, present: Any) -> dict[str, str]:
    """Protocol id -> title ('5-way 1-shot'), in table order, for the ids in ``present``."""
    from .leaderboard import protocol_label

    cells = lb.cells.sort_values(["n_way", "k_shot", "n_query"], kind="stable").drop_duplicates("protocol")
    wanted = set(present)
    return {str(c["protocol"]): protocol_label(int(c["n_way"]), int(c["k_shot"]))
            + (f" {int(c['n_query'])}q" if str(c["protocol"]).endswith("q") else "")
            for _, c in cells.iterrows() if c["protocol"] in wanted}


def _metric_label(lb: Any) -> str:
    unit = " (%)" if lb.scale == 100 else ""
    arrow = "higher is better" if lb.higher_is_better else "lower is better"
    return f"{lb.metric}{unit}, {arrow}"


def _legend(fig: Any, axes: Any) -> None:
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="outside right upper", fontsize="small",
                   frameon=False)


def shots_figure(lb: Any):
    """Mean metric (with its 95% CI) against shots, one line per experiment, one panel per ways."""
    cells, colors = lb.cells, _colors(lb)
    ways = {w: f"{w}-way" if w > 1 else "regression" for w in sorted(int(w) for w in cells["n_way"].unique())}
    panels = _panels(cells, "n_way", ways)
    fig, axes = _figure(len(panels), len(colors), _metric_label(lb))
    for p, (ax, (title, cell)) in enumerate(zip(axes, panels)):
        n_way = int(cell["n_way"].iloc[0])
        for i, (name, rows) in enumerate(cell.groupby("experiment", sort=False)):
            rows = rows.sort_values("k_shot")
            drawn = ax.errorbar(rows["k_shot"], rows["mean"] * lb.scale, yerr=rows["ci95"].fillna(0) * lb.scale,
                                color=colors[name], marker=KIND_MARKERS.get(rows["kind"].iloc[0], "o"),
                                capsize=3, label=name)
            drawn.lines[0].set_gid(f"series-shots-{n_way}w-{p}-{i}")
        ax.set_title(title)
        ax.set_xlabel("shots (K)")
        ax.set_xticks(sorted(int(k) for k in cell["k_shot"].unique()))
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def pareto_front(seconds: list[float], values: list[float], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both cost (less) and metric, cheapest first."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(seconds)), key=lambda i: (seconds[i], -sign * values[i]))
    front: list[int] = []
    for i in order:
        if not front or sign * values[i] > sign * values[front[-1]]:
            front.append(i)
    return front


def cost_figure(lb: Any):
    """Mean metric against training seconds (log scale) per protocol, with the Pareto front."""
    cells, colors = lb.cells.dropna(subset=["train_s"]), _colors(lb)
    if cells.empty:
        raise MtbenchError("no training times recorded: the cost plot needs train_s on the results")
    panels = _panels(cells, "protocol", _protocols(lb, cells["protocol"]))
    fig, axes = _figure(len(panels), len(colors) + 1, _metric_label(lb))
    for p, (ax, (title, rows)) in enumerate(zip(axes, panels)):
        rows = rows.reset_index(drop=True)
        for i, row in rows.iterrows():
            ax.errorbar([row["train_s"]], [row["mean"] * lb.scale], yerr=[(0 if row["ci95"] != row["ci95"] else
                                                                           row["ci95"]) * lb.scale],
                        color=colors[row["experiment"]], marker=KIND_MARKERS.get(row["kind"], "o"), capsize=3,
                        label=row["experiment"]).lines[0].set_gid(f"series-cost-{p}-{i}")
        front = pareto_front(list(rows["train_s"]), list(rows["mean"]), lb.higher_is_better)
        ax.plot(rows["train_s"][front], rows["mean"][front] * lb.scale, color="black", linestyle="--",
                drawstyle="steps-post", linewidth=1, marker="o", markersize=13, markerfacecolor="none",
                gid=f"pareto-front-{p}", label="Pareto front")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("training seconds (log scale)")
        ax.grid(alpha=0.3, which="both")
    _legend(fig, axes)
    return fig


def curves_figure(lb: Any):
    """Meta-validation metric against training steps, one line per experiment, one panel per protocol."""
    curves, colors = lb.curves, _colors(lb)
    if curves is None or curves.empty:
        raise MtbenchError("no meta-validation curves recorded in these results")
    if "key" in curves and (curves["key"] == f"val_{lb.metric}").any():
        curves = curves[curves["key"] == f"val_{lb.metric}"]
    if "dataset_label" not in curves:
        curves = curves.assign(dataset_label="")
    panels = _panels(curves, "protocol", _protocols(lb, curves["protocol"]))
    fig, axes = _figure(len(panels), len(colors), f"meta-validation {lb.metric}" + (" (%)" if lb.scale == 100 else ""))
    for p, (ax, (title, panel)) in enumerate(zip(axes, panels)):
        present = set(panel["experiment"])
        for i, name in enumerate(n for n in colors if n in present):  # table order, as in the other plots
            mean = panel[panel["experiment"] == name].groupby("step")["value"].mean()  # over seeds
            ax.plot(mean.index, mean.to_numpy() * lb.scale, color=colors.get(name), label=name,
                    gid=f"series-curve-{p}-{i}")
        ax.set_title(title)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def cd_cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(first, last)`` of rank-sorted experiments spanning less than ``cd`` (no singletons)."""
    runs: list[tuple[int, int]] = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not (runs and runs[-1][1] >= j):
            runs.append((i, j))
    return runs


def cd_figure(lb: Any):
    """Critical-difference diagram: average ranks on an axis, cliques under the CD joined by a bar."""
    fr = lb.friedman
    if not fr or not fr.get("average_ranks"):
        raise MtbenchError("no Friedman test in this leaderboard: the critical-difference diagram needs at "
                           "least two experiments sharing at least two cells")
    items = sorted(fr["average_ranks"].items(), key=lambda kv: kv[1])
    names, ranks = [n for n, _ in items], [float(r) for _, r in items]
    k, cd, half = len(names), float(fr["cd"]), (len(names) + 1) // 2
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.6 + 0.32 * half), layout="constrained")
    ax = fig.subplots()
    top, step = 0.0, 0.6
    ax.hlines(top, 1, max(k, 2), color="black", linewidth=1)
    for r in range(1, max(k, 2) + 1):
        ax.vlines(r, top, top + 0.12, color="black", linewidth=1)
        ax.text(r, top + 0.2, str(r), ha="center", va="bottom", fontsize="small")
    ax.plot([1, 1 + cd], [top + 0.85] * 2, color="black", linewidth=2, gid="cd-bar")
    ax.text(1 + cd / 2, top + 0.95, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize="small")
    for i, (name, rank) in enumerate(zip(names, ranks)):
        left = i < half
        y = -(1 + (i if left else k - 1 - i)) * step
        x_text = 0.6 if left else max(k, 2) + 0.4
        ax.plot([rank, rank, x_text], [top, y, y], color="black", linewidth=0.8, gid=f"cd-experiment-{i}")
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{name} ({rank:.2f})", ha="right" if left else "left",
                va="center", fontsize="small")
    for n, (first, last) in enumerate(cd_cliques(ranks, cd)):
        y = top - 0.18 - 0.12 * n
        ax.plot([ranks[first] - 0.03, ranks[last] + 0.03], [y, y], color="tab:red", linewidth=3,
                solid_capstyle="round", gid=f"cd-clique-{n}")
    ax.set_xlim(-2.5, max(k, 2) + 3.5)
    ax.set_ylim(-(half + 0.5) * step, top + 1.3)
    ax.axis("off")
    ax.set_title(f"average rank over {fr.get('n_cells', '?')} cells; Friedman p = {fr['p']:.2g}", fontsize="small")
    return fig


PLOTS: dict[str, Callable[[Any], Any]] = {"shots": shots_figure, "cost": cost_figure, "curves": curves_figure,
                                          "cd": cd_figure}


def check_kind(kind: str) -> None:
    if kind not in PLOTS:
        raise MtbenchError(f"unknown plot kind {kind!r}; use {', '.join(PLOTS)}")


def figure(lb: Any, kind: str):
    """The figure of ``kind`` (one of :data:`PLOTS`) for a leaderboard."""
    check_kind(kind)
    if lb.cells.empty:
        raise MtbenchError("no results to plot")
    return PLOTS[kind](lb)


def _save(fig: Any, target: Any, fmt: str, salt: str) -> None:
    import matplotlib

    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {"Software": None}}[fmt]
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(target, format=fmt, metadata=metadata, dpi=150 if fmt == "png" else None)


def file_format(path: Path) -> str:
    """'png', 'svg' or 'pdf' from the file suffix (checked before any work)."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise MtbenchError(f"plot file {path} must end in .png, .svg or .pdf")
    return fmt


def save(fig: Any, path: Path, salt: str = "mtbench") -> None:
    """Write a figure as PNG, SVG or PDF, chosen by the file suffix."""
    fmt = file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path, fmt, salt)


def svg_markup(fig: Any, salt: str) -> str:
    """The figure as an ``<svg>`` element (no XML prologue), to inline in an HTML page.

    Text stays text (``svg.fonttype = none``); matplotlib escapes it as XML, so a label cannot open a tag.
    ``salt`` keeps the ids of several figures on one page distinct and the output stable between runs.
    """
    buf = io.StringIO()
    _save(fig, buf, "svg", salt)
    text = buf.getvalue()
    return text[text.index("<svg"):]
