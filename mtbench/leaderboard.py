"""Aggregate result rows into a leaderboard and render it (terminal, Markdown, CSV, HTML, LaTeX).

The confidence interval is the one used across the few-shot literature: ``1.96 * std / sqrt(n)`` over
the per-episode scores of a cell (``std`` with ``ddof=1``), with ``n`` the number of episodes.
"""
from __future__ import annotations

import io
import math
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .suites import Reference

GROUP = ["suite", "dataset", "split", "algorithm", "kind", "budget", "params_hash", "n_way", "k_shot", "n_query",
         "metric"]


def ci95(values: Iterable[float]) -> float:
    """Half-width of the normal 95% interval of the mean."""
    arr = np.asarray(list(values), dtype=float)
    if len(arr) < 2:
        return float("nan")
    return float(1.96 * arr.std(ddof=1) / math.sqrt(len(arr)))


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, 95% CI, episode count and seed count per (suite, dataset, algorithm, protocol, metric)."""
    if frame.empty:
        return pd.DataFrame(columns=[*GROUP, "mean", "ci95", "n", "seeds", "fit_s", "train_steps", "train_s",
                                     "steps_to_val90"])
    grouped = frame.groupby(GROUP, dropna=False)
    out = grouped.agg(mean=("value", "mean"), ci95=("value", ci95), n=("value", "count"),
                      seeds=("seed", "nunique")).reset_index()
    runs = frame.drop_duplicates(["run_id", "metric"]).groupby(GROUP, dropna=False)
    fits = runs.agg(fit_s=("fit_s", "mean"), train_steps=("train_steps", "max"),
                    train_s=("train_s", "max"), steps_to_val90=("steps_to_val90", "max")).reset_index()
    out = out.merge(fits, on=GROUP, how="left")
    return out.sort_values(["suite", "dataset", "metric", "n_way", "k_shot", "mean"],
                           ascending=[True, True, True, True, True, False]).reset_index(drop=True)


def protocol_label(n_way: int, k_shot: int) -> str:
    """'5-way 1-shot' for classification; 'K=5' for regression (one task per episode, ways = 1)."""
    return f"{int(n_way)}-way {int(k_shot)}-shot" if n_way > 1 else f"K={int(k_shot)}"


def pivot(table: pd.DataFrame, metric: str = "accuracy", scale: float = 100.0, digits: int = 1,
          references: Iterable[Reference] = ()) -> pd.DataFrame:
    """Rows = (dataset, algorithm); columns = protocols; cells = 'mean ± ci (n)'; plus paper figures."""
    sub = table[table["metric"] == metric]
    if sub.empty:
        return pd.DataFrame()
    refs = {(r.dataset, r.algorithm, r.n_way, r.k_shot): r for r in references if r.metric == metric}
    protocols = sorted({(int(w), int(k)) for w, k in zip(sub["n_way"], sub["k_shot"])}, key=lambda p: (p[0], p[1]))
    records = []
    keys = ["dataset", "algorithm", "kind", "budget", "params_hash"]
    for (dataset, algorithm, kind, budget, _), rows in sub.groupby(keys, sort=False):
        record: dict[str, Any] = {"dataset": dataset, "algorithm": algorithm, "kind": kind, "budget": budget}
        for w, k in protocols:
            hit = rows[(rows["n_way"] == w) & (rows["k_shot"] == k)]
            label = protocol_label(w, k)
            if not hit.empty:
                r = hit.iloc[0]
                record[label] = f"{r['mean'] * scale:.{digits}f} ± {r['ci95'] * scale:.{digits}f} ({int(r['n'])})"
            else:
                record[label] = "–"
            ref = refs.get((dataset, algorithm, w, k))
            if refs:
                record[f"{label} paper"] = (f"{ref.value:g}" + (f" ± {ref.ci95:g}" if ref.ci95 is not None else "")
                                            if ref else "–")
        steps = rows["train_steps"].dropna()
        record["train steps"] = int(steps.max()) if len(steps) else "–"
        seconds = rows["train_s"].dropna()
        record["train s"] = f"{seconds.max():.0f}" if len(seconds) else "–"
        if sub["steps_to_val90"].notna().any():  # meta-validation was recorded (accuracy >= 90% reached)
            reached = rows["steps_to_val90"].dropna()
            record["steps to 90% val"] = f"{reached.max():.0f}" if len(reached) else "–"
        records.append(record)
    return pd.DataFrame.from_records(records)


def render_markdown(wide: pd.DataFrame, title: str = "", notes: Iterable[str] = ()) -> str:
    lines = [f"# {title}", ""] if title else []
    if wide.empty:
        return "\n".join(lines + ["(no results)", ""])
    cols = list(wide.columns)
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in wide.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    lines.append("")
    lines.extend(f"{n}" for n in notes)
    return "\n".join(lines) + ("\n" if notes else "")


def render_csv(table: pd.DataFrame) -> str:
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue()


def render_html(wide: pd.DataFrame, title: str = "") -> str:
    head = f"<h1>{title}</h1>\n" if title else ""
    return head + wide.to_html(index=False, border=0, classes="mtbench-leaderboard")


def render_latex(wide: pd.DataFrame) -> str:
    def esc(value: Any) -> str:
        return str(value).replace("±", r"$\pm$").replace("_", r"\_").replace("–", "--")
    cols = list(wide.columns)
    lines = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(row[c]) for c in cols) + r" \\" for _, row in wide.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def render_rich(wide: pd.DataFrame, title: str = "") -> Any:
    from rich.table import Table

    table = Table(title=title or None)
    for col in wide.columns:
        table.add_column(str(col), justify="left" if col in ("dataset", "algorithm", "kind", "budget") else "right")
    for _, row in wide.iterrows():
        table.add_row(*(str(row[c]) for c in wide.columns))
    return table


RENDERERS: dict[str, Callable[..., Any]] = {"markdown": render_markdown, "html": render_html,
                                            "latex": render_latex}
