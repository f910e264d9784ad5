"""``mtbench compare``: two experiments of one results dir, or one results dir before and after a change.

* **Two experiments** (``compare -r DIR A B``): in every cell (dataset x protocol) both ran, the paired
  difference A - B on the shared episodes, its 95% CI and p-values. A name may be an experiment label
  (``meta-sgd (meta_iterations=3000)``) or an algorithm label; an algorithm with several experiments
  (rows of different settings) is compared experiment by experiment, never pooled.
* **Before / after** (``compare BEFORE AFTER``), the asv / pytest-benchmark pattern: the same experiment
  (same identity) in both dirs, per cell: before, after, their ratio, the paired difference when the
  episodes are the same (digests equal) and a Welch test on the episode scores otherwise. With
  ``--fail-if-worse accuracy:0.5`` a cell significantly worse by more than 0.5 display units (points)
  fails the command, for use as a CI gate.

p-values are Holm-corrected over the comparisons of one invocation.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import stats
from .errors import MtbenchError
from .leaderboard import ExperimentCells, cell_test, display_digits
from .metrics import Metric

COLUMNS = ["dataset", "protocol", "a", "b", "mean_a", "mean_b", "ratio", "diff_mean", "diff_ci95", "p_wilcoxon",
           "p_ttest", "p_holm", "paired", "significant", "worse", "note"]


@dataclass
class Comparison:
    """Rows of a comparison (one per cell and pair), in metric units.

    Two experiments: ``diff_mean`` = A - B, ``ratio`` = A / B, ``worse``: B is worse than A.
    Two dirs: ``mean_a`` before, ``mean_b`` after, ``diff_mean`` = after - before, ``ratio`` = after / before,
    ``worse``: after is worse than before.
    """

    mode: str  # "experiments" | "dirs"
    metric: str
    higher_is_better: bool
    scale: float
    digits: int
    rows: pd.DataFrame
    notes: list[str]

    def failures(self, threshold: float) -> pd.DataFrame:
        """Cells significantly worse by more than ``threshold`` display units (e.g. 0.5 points)."""
        rows = self.rows
        return rows[rows["significant"] & rows["worse"] & (rows["diff_mean"].abs() * self.scale > threshold)]

    def to_json(self) -> str:
        records = [{k: _jsonable(v) for k, v in row.items()} for row in self.rows.to_dict("records")]
        return json.dumps({"mode": self.mode, "metric": self.metric, "higher_is_better": self.higher_is_better,
                           "scale": self.scale, "rows": records, "notes": self.notes}, indent=1) + "\n"

    def to_text(self) -> str:
        """A plain fixed-width table: means in display units, the difference with one more digit."""
        if self.rows.empty:
            return "(no shared cells)\n"
        d = self.digits + 1
        two = self.mode == "experiments"
        first, second = ("A", "B") if two else ("before", "after")
        diff, ratio = (f"{first} - {second}", f"{first}/{second}") if two else (f"{second} - {first}",
                                                                               f"{second}/{first}")
        table = []
        for r in self.rows.to_dict("records"):
            table.append([r["dataset"], r["protocol"], *([r["a"], r["b"]] if two else [r["experiment"]]),
                          self._num(r["mean_a"]), self._num(r["mean_b"]),
                          ("–" if _nan(r["diff_mean"]) else f"{r['diff_mean'] * self.scale:+.{d}f}")
                          + ("" if _nan(r["diff_ci95"]) else f" ± {r['diff_ci95'] * self.scale:.{d}f}"),
                          "–" if _nan(r["ratio"]) else f"{r['ratio']:.4f}",
                          _p(r["p_wilcoxon"]), _p(r["p_ttest"]), _p(r["p_holm"]) + ("*" if r["significant"] else ""),
                          "paired" if r["paired"] else "unpaired"])
        header = ["dataset", "protocol", *([first, second] if two else ["experiment"]), f"mean {first}",
                  f"mean {second}", diff, ratio, "p Wilcoxon", "p t-test", "p Holm", "test"]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *table]]
        return "\n".join([*lines, "", *self.notes]) + "\n"

    def _num(self, value: float) -> str:
        return "–" if _nan(value) else f"{value * self.scale:.{self.digits}f}"


def _p(value: Any) -> str:
    return "–" if _nan(value) else f"{value:.2g}"


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def _test(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a - b``: paired on shared episodes, else Welch (see :func:`mtbench.leaderboard.cell_test`)."""
    result = cell_test(a, b)
    return {**{k: result[k] for k in ("diff_mean", "diff_ci95", "p_wilcoxon", "p_ttest", "paired")},
            "note": result["paired_note"]}


def _finish(rows: list[dict[str, Any]], metric: Metric, mode: str, notes: list[str]) -> Comparison:
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    primary = [r["p_wilcoxon"] if r["paired"] else r["p_ttest"] for r in rows]
    frame["p_holm"] = stats.holm(primary) if rows else []
    frame["significant"] = frame["p_holm"].fillna(1.0) < stats.ALPHA
    notes = [*notes, f"{metric.name}: {'higher' if metric.higher_is_better else 'lower'} is better. "
             f"Paired rows: Wilcoxon signed-rank on the shared episodes (t-based CI of the mean difference); "
             f"unpaired rows: Welch's t-test. p Holm-corrected over the {len(rows)} comparisons; "
             f"* = significant at {stats.ALPHA}."]
    return Comparison(mode, metric.name, metric.higher_is_better, float(metric.scale), display_digits(metric), frame,
                      notes)


def _select(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Cells of an experiment label, else of every experiment of an algorithm label."""
    exact = frame[frame["experiment"] == name]
    if not exact.empty:
        return exact
    by_algorithm = frame[frame["algorithm"] == name]
    if by_algorithm.empty:
        known = ", ".join(sorted(set(frame["experiment"])))
        raise MtbenchError(f"no experiment or algorithm {name!r} in these results (experiments: {known})")
    return by_algorithm


def compare_experiments(cells: ExperimentCells, name_a: str, name_b: str, metric: Metric) -> Comparison:
    """Every cell both ran in: A - B, paired on the shared episodes."""
    frame = cells.frame
    if frame.empty:
        raise MtbenchError(f"no {metric.name!r} results to compare")
    a_cells, b_cells = _select(frame, name_a), _select(frame, name_b)
    rows, notes = [], []
    for name, sel in ((name_a, a_cells), (name_b, b_cells)):
        labels = sorted(set(sel["experiment"]))
        if len(labels) > 1:
            notes.append(f"{name!r} has {len(labels)} experiments (rows of different settings), compared one by one: "
                         + "; ".join(labels) + ". Name one by its experiment label to compare only it.")
    for (_, a), (_, b) in ((ra, rb) for ra in a_cells.iterrows() for rb in b_cells.iterrows()):
        if (a["dataset_key"], a["n_way"], a["k_shot"], a["n_query"]) != (b["dataset_key"], b["n_way"], b["k_shot"],
                                                                          b["n_query"]):
            continue
        if a["experiment_key"] == b["experiment_key"]:
            continue
        result = _test(a, b)
        worse = (result["diff_mean"] > 0) if metric.higher_is_better else (result["diff_mean"] < 0)
        rows.append({"dataset": a["dataset_label"], "protocol": a["protocol"], "a": a["experiment"],
                     "b": b["experiment"], "mean_a": a["mean"], "mean_b": b["mean"],
                     "ratio": a["mean"] / b["mean"] if b["mean"] else float("nan"), **result, "worse": bool(worse)})
    if not rows:
        raise MtbenchError(f"{name_a!r} and {name_b!r} share no cell (dataset and protocol)")
    return _finish(rows, metric, "experiments", notes)


def compare_dirs(before: ExperimentCells, after: ExperimentCells, metric: Metric) -> Comparison:
    """The same experiments and cells in two results dirs: before, after, ratio, and the change's test.

    An experiment matches its own identity; failing that, the one before-experiment of the same algorithm,
    budget, evaluation mode and cell whose parameters agree on every parameter both record (code that
    gained a parameter records it, older results do not): the note names the parameters one side lacks.
    """
    if before.frame.empty or after.frame.empty:
        which = "before" if before.frame.empty else "after"
        raise MtbenchError(f"no {metric.name!r} results in the {which} dir")
    key = ["experiment_key", "dataset_key", "n_way", "k_shot", "n_query"]
    old = {tuple(r[k] for k in key): r for _, r in before.frame.iterrows()}
    rows, notes = [], []
    only_after = 0
    for _, new in after.frame.iterrows():
        prev = old.pop(tuple(new[k] for k in key), None)
        if prev is None:
            prev = _same_but_new_parameters(new, old, notes)
        if prev is None:
            only_after += 1
            continue
        result = _test(new, prev)  # after - before
        worse = (result["diff_mean"] < 0) if metric.higher_is_better else (result["diff_mean"] > 0)
        rows.append({"dataset": new["dataset_label"], "protocol": new["protocol"], "a": new["experiment"],
                     "b": new["experiment"], "mean_a": prev["mean"], "mean_b": new["mean"],
                     "ratio": new["mean"] / prev["mean"] if prev["mean"] else float("nan"), **result,
                     "worse": bool(worse)})
    if old or only_after:
        notes.append(f"Not compared: {len(old)} cell(s) only before, {only_after} only after (identity differs).")
    if not rows:
        raise MtbenchError("the two results dirs share no experiment and cell")
    rows.sort(key=lambda r: (r["dataset"], r["protocol"], r["a"]))
    comparison = _finish(rows, metric, "dirs", notes)
    comparison.rows = comparison.rows.rename(columns={"a": "experiment"}).drop(columns="b")
    return comparison


def _same_but_new_parameters(new: pd.Series, old: dict, notes: list[str]) -> pd.Series | None:
    """Pop and return the one before-row that differs from ``new`` only by parameters one side lacks."""
    same = ("algorithm", "plugin", "budget", "transductive", "dataset_key", "n_way", "k_shot", "n_query")
    found = []
    for k, row in old.items():
        if any(row[c] != new[c] for c in same):
            continue
        shared = row["params"].keys() & new["params"].keys()
        if all(row["params"][p] == new["params"][p] for p in shared):
            found.append(k)
    if len(found) != 1:
        return None
    prev = old.pop(found[0])
    lacking = sorted(prev["params"].keys() ^ new["params"].keys())
    notes.append(f"{new['experiment']} ({new['protocol']}) compared with the before-run that agrees on every parameter "
                 f"both record; recorded on one side only: {', '.join(lacking)}.")
    return prev


def parse_threshold(spec: str) -> tuple[str, float]:
    """``accuracy:0.5`` -> ("accuracy", 0.5): metric name and tolerated loss in display units."""
    name, sep, raw = spec.partition(":")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not sep or not name or math.isnan(value) or value < 0:
        raise MtbenchError(f"--fail-if-worse {spec!r} must look like METRIC:THRESHOLD, e.g. accuracy:0.5")
    return name, value
