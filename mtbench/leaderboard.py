"""Build a leaderboard from result files: one row per experiment, seeds as a level, paired significance.

* **Identity.** A row is an experiment (see :mod:`mtbench.frame`): runs are never pooled across
  datasets, dataset parameters, cross-domain bases, hyperparameters, budgets or evaluation modes.
* **Seeds.** Each seed is aggregated over its episodes first. With two or more seeds a cell is the
  mean over seeds with a Student-t 95% interval across seeds (training variance); with one seed it is
  the literature's episode interval ``1.96 * std(ddof=1) / sqrt(n_episodes)``.
* **Significance.** Within a cell (dataset x protocol), every experiment is compared with the cell's
  best on the shared episodes (:mod:`mtbench.stats`); Holm corrects across the whole table.
* **Direction.** ``Metric.higher_is_better`` decides what best means, everywhere.

Renderers (terminal, Markdown, HTML, ...) take the :class:`Leaderboard` and only lay it out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from . import stats
from .frame import differing_keys, mean_or_none, runs_table, settings_label
from .metrics import Metric

CELL = ["dataset_key", "n_way", "k_shot", "n_query"]


@dataclass
class Leaderboard:
    """Everything a renderer needs; ``cells`` has one row per (experiment, protocol).

    ``experiment`` is unique within a dataset (``dataset_label`` + ``experiment`` is unique in the
    table) and names the same method across datasets, so ranks can be averaged over cells.
    Differences (``diff_mean``, ``diff_ci95``), ``mean``, ``ci95`` and ``seed_std`` are in metric units;
    multiply by ``scale`` for display.
    """

    title: str
    suite: str | None
    metric: str
    higher_is_better: bool
    scale: float
    digits: int
    cells: pd.DataFrame
    wide: pd.DataFrame
    curves: pd.DataFrame
    friedman: dict | None
    notes: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    alpha: float = stats.ALPHA

    def fmt(self, value: Any) -> str:
        """A metric value in display units and digits ('–' when missing)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return f"{value * self.scale:.{self.digits}f}"


def protocol_label(n_way: int, k_shot: int) -> str:
    """'5-way 1-shot' for classification; 'K=5' for regression (one task per episode, ways = 1)."""
    return f"{int(n_way)}-way {int(k_shot)}-shot" if n_way > 1 else f"K={int(k_shot)}"


def display_digits(metric: Metric) -> int:
    return 1 if metric.scale == 100 else 3


# -- identity -------------------------------------------------------------------------------------------
def _dedupe(table: pd.DataFrame, code_versions: Mapping[str, str]) -> tuple[pd.DataFrame, int]:
    """One run per (experiment, cell, seed): prefer a run of the installed code, then the later file."""
    table = table.assign(_current=[code_versions.get(p) == v for p, v in zip(table["plugin"], table["code_version"])])
    table = table.assign(_order=range(len(table))).sort_values(["_current", "_order"])
    kept = table.drop_duplicates(["experiment_key", *CELL, "seed"], keep="last").sort_values("_order")
    return kept.drop(columns=["_current", "_order"]), len(table) - len(kept)


def _dataset_labels(table: pd.DataFrame) -> dict[str, str]:
    """dataset_key -> label, made distinct where two dataset identities derive the same label."""
    first = table.drop_duplicates("dataset_key")
    out = {}
    for label, group in first.groupby("dataset_label", sort=False):
        if len(group) == 1:
            out[group["dataset_key"].iloc[0]] = label
            continue
        flat = [_dataset_settings(row) for _, row in group.iterrows()]
        keys = differing_keys(flat)
        for (_, row), values in zip(group.iterrows(), flat):
            out[row["dataset_key"]] = f"{label} ({settings_label(values, keys)})"
    return out


def _dataset_settings(row: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset identity as flat settings: parameters, split, and the base's when it is another dataset."""
    out = {**row["dataset_params"], "split": row["split"]}
    if (row["train_dataset"], row["train_dataset_params"]) != (row["dataset"], row["dataset_params"]):
        out.update({"train": row["train_dataset"], **{f"train.{k}": v for k, v in row["train_dataset_params"].items()}})
    return out


def _experiment_labels(table: pd.DataFrame) -> tuple[dict[str, str], dict[str, str]]:
    """experiment_key -> (display label, settings): the algorithm label plus the settings that differ.

    The differing keys are found among experiments of one algorithm label *within one dataset* and
    used for that algorithm everywhere, so the same method keeps one name across datasets.
    """
    exps = table.drop_duplicates("experiment_key")
    settings = {key: {**p, "budget": b} for key, p, b in zip(exps["experiment_key"], exps["params"], exps["budget"])}
    labels, shown = {}, {}
    for algorithm, group in exps.groupby("algorithm", sort=False):
        keys: list[str] = []
        for _, within in group.groupby("dataset_key", sort=False):
            keys += [k for k in differing_keys([settings[e] for e in within["experiment_key"]]) if k not in keys]
        keys.sort(key=lambda k: (k != "budget", k))
        for key in group["experiment_key"]:
            shown[key] = settings_label(settings[key], keys)
            labels[key] = f"{algorithm} ({shown[key]})" if keys else str(algorithm)
    return labels, shown


# -- aggregation over seeds -------------------------------------------------------------------------------
def _aggregate(runs: pd.DataFrame, metric: str) -> dict[str, Any]:
    """One cell of one experiment: seeds first, then the mean (and the per-episode vector for pairing)."""
    per_seed = {int(s): v for s, v in zip(runs["seed"], runs["values"])}
    seed_means = np.array([v.mean() for v in per_seed.values()])
    n_seeds = len(per_seed)
    if n_seeds >= 2:
        mean, ci, kind, seed_std = float(seed_means.mean()), stats.t_ci95(seed_means), "seeds", float(
            seed_means.std(ddof=1))
    else:
        only = next(iter(per_seed.values()))
        mean, ci, kind, seed_std = float(only.mean()), stats.episode_ci95(only.to_numpy()), "episodes", float("nan")
    reached = [_first_step(v, metric) for v in runs["validation"]]
    reached = [r for r in reached if r is not None]
    return {
        "mean": mean, "ci95": ci, "ci_kind": kind, "n_seeds": n_seeds, "seed_std": seed_std,
        "n_episodes": int(min(len(v) for v in per_seed.values())), "seeds": sorted(per_seed),
        "per_seed": per_seed, "digests": {int(s): d for s, d in zip(runs["seed"], runs["digest"])},
        "train_s": mean_or_none(runs["train_s"]), "train_steps": mean_or_none(runs["train_steps"]),
        "adapt_ms": mean_or_none(runs["adapt_ms"]), "peak_mb": mean_or_none(runs["peak_mb"]),
        "device": ", ".join(sorted({str(d) for d in runs["device"] if d})),
        "steps_to_val90": (max(reached) if len(reached) == n_seeds and reached else None),
        "code_version": ", ".join(sorted({str(v) for v in runs["code_version"] if v})),
        "git_commit": ", ".join(sorted({str(v) for v in runs["git_commit"] if v})),
        "deviations": list(dict.fromkeys(d for ds in runs["deviations"] for d in ds)),
        "run_ids": list(runs["run_id"]),
    }


def _first_step(validation: list[tuple[int, str, float]], metric: str) -> int | None:
    """First validated step with validation accuracy >= 90% (only meaningful for accuracy)."""
    if metric != "accuracy":
        return None
    for step, key, value in validation:
        if key == "val_accuracy" and value >= 0.9:
            return step
    return None


# -- pairing -----------------------------------------------------------------------------------------------
def paired_vectors(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str] | str:
    """Per-episode vectors of two aggregated cells on their shared seeds, or why they cannot be paired.

    With several seeds each seed's episodes are the same for both (equal digests), and the vectors are
    the per-episode means across the shared seeds (episode ``i`` of every seed averaged).
    """
    shared = sorted(set(a["seeds"]) & set(b["seeds"]))
    if not shared:
        return f"no shared seed (seeds {a['seeds']} vs {b['seeds']})"
    for seed in shared:
        da, db = a["digests"].get(seed), b["digests"].get(seed)
        if not da or not db:
            return f"seed {seed}: an episode digest is not recorded"
        if da != db:
            return f"seed {seed}: episode digests differ ({da} vs {db}), not the same episodes"
    xa = pd.concat([a["per_seed"][s] for s in shared], axis=1).mean(axis=1)
    xb = pd.concat([b["per_seed"][s] for s in shared], axis=1).mean(axis=1)
    common = xa.index.intersection(xb.index)
    if len(common) != len(xa) or len(common) != len(xb):
        return f"episode indices differ ({len(xa)} vs {len(xb)} episodes)"
    note = "" if set(a["seeds"]) == set(b["seeds"]) else f"paired on shared seeds {shared}"
    return xa.loc[common].to_numpy(), xb.loc[common].to_numpy(), note


def _is_worse(diff: float, higher_is_better: bool) -> bool:
    return diff < 0 if higher_is_better else diff > 0


# -- the table ---------------------------------------------------------------------------------------------
@dataclass
class ExperimentCells:
    """The runs of one metric, one per (experiment, cell, seed), aggregated per (experiment, cell).

    ``frame`` keeps each cell's per-seed episode values (``per_seed``) and digests for pairing;
    ``table`` is the per-run table it came from.
    """

    frame: pd.DataFrame
    table: pd.DataFrame
    superseded: int
    experiment_labels: dict[str, str]
    dataset_labels: dict[str, str]


def experiment_cells(runs: list[dict], *, suite: Any = None, metric: Metric,
                     code_versions: Mapping[str, str] | None = None) -> ExperimentCells:
    """Identity, labels and the per-seed aggregation shared by the leaderboard and ``mtbench compare``."""
    code_versions = dict(code_versions or {})
    table = runs_table(runs)
    table = table[table["metric"] == metric.name]
    if suite is not None:
        table = table[table["suite"] == suite.name]
    table, superseded = _dedupe(table.reset_index(drop=True), code_versions)
    if table.empty:
        return ExperimentCells(pd.DataFrame(), table, superseded, {}, {})
    data_labels = _dataset_labels(table)
    exp_labels, exp_settings = _experiment_labels(table)
    queries = table.groupby(["dataset_key", "n_way", "k_shot"])["n_query"].nunique()
    cells = []
    for (exp_key, *cell), runs_ in table.groupby(["experiment_key", *CELL], sort=False):
        first = runs_.iloc[0]
        protocol = first["protocol"] + (f"{int(first['n_query'])}q" if queries.loc[tuple(cell[:3])] > 1 else "")
        cells.append({
            "experiment": exp_labels[exp_key], "algorithm": first["algorithm"], "plugin": first["plugin"],
            "kind": first["kind"], "dataset": first["dataset"], "dataset_label": data_labels[first["dataset_key"]],
            "protocol": protocol, "n_way": int(first["n_way"]), "k_shot": int(first["k_shot"]),
            "n_query": int(first["n_query"]), "transductive": bool(first["transductive"]),
            "backbone": first["backbone"], "budget": first["budget"], "settings": exp_settings[exp_key],
            "params": first["params"], "experiment_key": exp_key, "dataset_key": first["dataset_key"],
            "stale": any(code_versions.get(p, v) != v for p, v in zip(runs_["plugin"], runs_["code_version"])),
            "allocator": ", ".join(sorted(set(runs_["allocator"]))),
            **_aggregate(runs_, metric.name),
        })
    return ExperimentCells(pd.DataFrame.from_records(cells), table, superseded, exp_labels, data_labels)


def build_leaderboard(runs: list[dict], *, suite: Any = None, metric: Metric, title: str = "",
                      code_versions: Mapping[str, str] | None = None) -> Leaderboard:
    """The leaderboard of ``metric`` over result payloads (``ResultStore.load()``).

    ``suite`` (a :class:`~mtbench.suites.Suite`) restricts to its results and supplies paper figures;
    ``code_versions`` (plugin -> installed ``code_version``) marks rows produced by older code as stale.
    """
    hib, scale, digits = metric.higher_is_better, float(metric.scale), display_digits(metric)
    found = experiment_cells(runs, suite=suite, metric=metric, code_versions=code_versions)
    if found.frame.empty:
        return Leaderboard(title, getattr(suite, "name", None), metric.name, hib, scale, digits, pd.DataFrame(),
                           pd.DataFrame(), pd.DataFrame(), None, [], {"result_files": 0})
    frame = _significance(found.frame, hib)
    _paper(frame, suite, metric.name)
    frame = frame.sort_values(["dataset_label", "n_way", "k_shot", "n_query", "mean"],
                              ascending=[True, True, True, True, not hib], kind="stable").reset_index(drop=True)
    friedman = _friedman(frame, hib)
    notes = _notes(frame, metric, found.superseded, friedman)
    wide = _wide(frame, scale, digits)
    public = frame.drop(columns=["per_seed", "digests"])
    return Leaderboard(title, getattr(suite, "name", None), metric.name, hib, scale, digits, public, wide,
                       _curves(found.table, found.experiment_labels, found.dataset_labels), friedman, notes,
                       _provenance(found.table))


def cell_test(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``a - b`` for two aggregated cells: paired on the shared episodes, else Welch's t-test.

    ``p`` is the decision's p-value: Wilcoxon's when paired, Welch's otherwise (then ``paired`` is False
    and ``paired_note`` says why the episodes could not be paired). Without pairing, the unit is the seed
    when both have several seeds, else the episode.
    """
    vectors = paired_vectors(a, b)
    if not isinstance(vectors, str):
        x, y, note = vectors
        t = stats.paired_test(x, y)
        return {"diff_mean": t.diff_mean, "diff_ci95": t.diff_ci95, "p_wilcoxon": t.p_wilcoxon, "p_ttest": t.p_ttest,
                "p": t.p_wilcoxon, "paired": True, "paired_note": note}
    if a["n_seeds"] >= 2 and b["n_seeds"] >= 2:
        x = np.array([v.mean() for v in a["per_seed"].values()])
        y = np.array([v.mean() for v in b["per_seed"].values()])
    else:
        x = np.concatenate([v.to_numpy() for v in a["per_seed"].values()])
        y = np.concatenate([v.to_numpy() for v in b["per_seed"].values()])
    t = stats.welch_test(x, y)
    return {"diff_mean": t.diff_mean, "diff_ci95": t.diff_ci95, "p_wilcoxon": float("nan"), "p_ttest": t.p_ttest,
            "p": t.p_ttest, "paired": False, "paired_note": f"{vectors}; Welch's t-test instead (unpaired)"}


TEST_COLUMNS = ("diff_mean", "diff_ci95", "p_wilcoxon", "p_ttest", "p", "paired", "paired_note")


def _significance(frame: pd.DataFrame, hib: bool) -> pd.DataFrame:
    """Best per cell, a test of every row against it, Holm across the table, tied ranks per cell."""
    records = {}
    groups = list(frame.groupby(["dataset_key", "n_way", "k_shot", "n_query"], sort=False))
    for _, cell in groups:
        order = cell.sort_values("mean", ascending=not hib, kind="stable")
        best = order.iloc[0]
        records[order.index[0]] = {"best": True, "diff_mean": float("nan"), "diff_ci95": float("nan"),
                                   "p_wilcoxon": float("nan"), "p_ttest": float("nan"), "p": float("nan"),
                                   "paired": True, "paired_note": ""}
        for i, row in order.iloc[1:].iterrows():
            records[i] = {"best": False, **cell_test(row, best)}
    frame = frame.join(pd.DataFrame.from_dict(records, orient="index"))
    frame["p_holm"] = stats.holm(frame["p"].to_numpy(dtype=float))
    frame["significant"] = [bool(p < stats.ALPHA and _is_worse(d, hib))
                            for p, d in zip(frame["p_holm"].fillna(1.0), frame["diff_mean"].fillna(0.0))]
    frame["rank"] = 0
    for _, cell in groups:
        order = frame.loc[cell.index].sort_values("mean", ascending=not hib, kind="stable")
        ranks = stats.tied_ranks(list(order.index), _worse_than(frame, order, hib))
        for i, r in ranks.items():
            frame.at[i, "rank"] = r
    return frame.drop(columns="p")


def _worse_than(frame: pd.DataFrame, order: pd.DataFrame, hib: bool) -> Callable[[Any, list[Any]], set[Any]]:
    """For :func:`stats.tied_ranks`: which rows are significantly worse than a leader.

    Against the cell's best this is the table's Holm-corrected verdict (``significant``); against a
    later leader, the leader is tested against the rows still unranked, Holm within that round.
    """
    best = order.index[0]

    def worse(leader: Any, others: list[Any]) -> set[Any]:
        if leader == best:
            return {i for i in others if frame.at[i, "significant"]}
        tests = {i: cell_test(frame.loc[i], frame.loc[leader]) for i in others}
        adjusted = stats.holm([t["p"] for t in tests.values()])
        return {i for (i, t), p in zip(tests.items(), adjusted)
                if p < stats.ALPHA and _is_worse(t["diff_mean"], hib)}
    return worse


def _paper(frame: pd.DataFrame, suite: Any, metric: str) -> None:
    """Published figures beside ours, matched on algorithm (or experiment) label, dataset and protocol."""
    refs = {}
    for ref in (getattr(suite, "references", ()) or ()):
        if ref.metric == metric:
            refs[(ref.algorithm, ref.dataset, ref.n_way, ref.k_shot)] = ref
    found = []
    for _, row in frame.iterrows():
        hit = None
        for name in (row["experiment"], row["algorithm"]):
            for data in (row["dataset_label"], row["dataset"]):
                hit = hit or refs.get((name, data, row["n_way"], row["k_shot"]))
        found.append(hit)
    frame["paper"] = [r.value if r else None for r in found]
    frame["paper_ci95"] = [r.ci95 if r else None for r in found]
    frame["paper_source"] = [r.source if r else "" for r in found]


def _friedman(frame: pd.DataFrame, hib: bool) -> dict | None:
    scores = frame.pivot_table(index=["dataset_label", "n_way", "k_shot", "n_query"], columns="experiment",
                               values="mean", aggfunc="first")
    return stats.friedman(scores, hib)


def _curves(table: pd.DataFrame, exp_labels: Mapping[str, str], data_labels: Mapping[str, str]) -> pd.DataFrame:
    """Meta-validation curves (step, value) per experiment, protocol and seed, from the fit histories."""
    records = []
    for _, run in table.iterrows():
        for step, key, value in run["validation"]:
            records.append({"experiment": exp_labels[run["experiment_key"]],
                            "dataset_label": data_labels[run["dataset_key"]], "protocol": run["protocol"],
                            "seed": run["seed"], "key": key, "step": step, "value": value})
    return pd.DataFrame.from_records(records, columns=["experiment", "dataset_label", "protocol", "seed", "key",
                                                       "step", "value"])


# -- display -----------------------------------------------------------------------------------------------
MARKS = {"best": "*", "tied": "=", "unpaired": "?"}


def cell_mark(row: Mapping[str, Any]) -> str:
    """``*`` best of its cell, ``=`` not significantly worse than the best, nothing when significantly
    worse; ``?`` added when the episodes differ, so the test was Welch's unpaired one."""
    if row["best"]:
        return MARKS["best"]
    mark = "" if row["significant"] else MARKS["tied"]
    return mark + ("" if row.get("paired", True) else MARKS["unpaired"])


def cell_text(row: Mapping[str, Any], scale: float, digits: int) -> str:
    """'93.7 ± 0.4 (600) *': mean ± CI, episodes (one seed) or seeds, and the significance mark."""
    ci = row["ci95"]
    text = f"{row['mean'] * scale:.{digits}f} ± " + ("–" if math.isnan(ci) else f"{ci * scale:.{digits}f}")
    text += f" ({row['n_episodes']})" if row["n_seeds"] == 1 else f" ({row['n_seeds']} seeds)"
    mark = cell_mark(row)
    return f"{text} {mark}" if mark else text


def _wide(frame: pd.DataFrame, scale: float, digits: int) -> pd.DataFrame:
    """The display table: one row per experiment, a 'mean ± ci' column per protocol, paper, rank, costs."""
    protocols = (frame[["n_way", "k_shot", "n_query", "protocol"]].drop_duplicates()
                 .sort_values(["n_way", "k_shot", "n_query"]))
    labels = {p: protocol_label(w, k) + (f" {q}q" if len(p) > len(f"{w}w{k}s") else "")
              for w, k, q, p in protocols.itertuples(index=False)}
    has_paper = frame["paper"].notna().any()
    records = []
    for (data_key, exp_key), rows in frame.groupby(["dataset_key", "experiment_key"], sort=False):
        first = rows.iloc[0]
        record: dict[str, Any] = {"dataset": first["dataset_label"], "experiment": first["experiment"],
                                  "kind": first["kind"], "backbone": first["backbone"] or "–",
                                  "transductive": "yes" if first["transductive"] else "no"}
        for p, label in labels.items():
            hit = rows[rows["protocol"] == p]
            record[label] = cell_text(hit.iloc[0], scale, digits) if len(hit) else "–"
            if has_paper:
                ref = hit.iloc[0] if len(hit) else None
                record[f"{label} paper"] = _paper_text(ref) if ref is not None and _present(ref["paper"]) else "–"
        record["rank"] = f"{rows['rank'].mean():.3g}"
        record["budget"] = first["budget"]
        record["train steps"] = _num(rows["train_steps"].max(), "{:.0f}")
        record["train s"] = _num(rows["train_s"].max(), "{:.0f}")
        record["adapt ms"] = _span(rows["adapt_ms"], "{:.3g}")
        record["peak MB"] = _num(rows["peak_mb"].max(), "{:.0f}")
        record["device"] = first["device"]
        if frame["steps_to_val90"].notna().any():
            record["steps to 90% val"] = _num(rows["steps_to_val90"].max(), "{:.0f}")
        record["allocator"] = ", ".join(sorted(set(", ".join(rows["allocator"]).split(", "))))
        record["stale"] = "stale" if rows["stale"].any() else ""
        records.append(record)
    wide = pd.DataFrame.from_records(records)
    if wide["allocator"].nunique() < 2:  # shown only when the table mixes them: their times differ
        wide = wide.drop(columns="allocator")
    if not (wide["stale"] != "").any():
        wide = wide.drop(columns="stale")
    return wide


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _paper_text(row: Mapping[str, Any]) -> str:
    ci = row["paper_ci95"]
    return f"{row['paper']:g}" + (f" ± {ci:g}" if _present(ci) else "")


def _num(value: Any, fmt: str) -> str:
    return fmt.format(value) if _present(value) else "–"


def _span(values: pd.Series, fmt: str) -> str:
    """'12.6' or '12.6–210' when a row's protocols differ (adaptation cost grows with ways and shots)."""
    present = values.dropna()
    if present.empty:
        return "–"
    low, high = fmt.format(present.min()), fmt.format(present.max())
    return low if low == high else f"{low}–{high}"


def _notes(frame: pd.DataFrame, metric: Metric, superseded: int, friedman: dict | None) -> list[str]:
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    kinds = set(frame["ci_kind"])
    notes = [f"{metric.name}: {direction}; values x{metric.scale:g}." if metric.scale != 1
             else f"{metric.name}: {direction}."]
    if "episodes" in kinds:
        notes.append("Rows with one seed: mean ± 1.96 * std(ddof=1) / sqrt(episodes) over the test episodes, "
                     "with the episode count in parentheses; this interval ignores training variance.")
    if "seeds" in kinds:
        notes.append("Rows with several seeds: mean over seeds ± Student-t 95% interval across the seeds' means "
                     "(training variance), with the seed count in parentheses.")
    notes.append(f"Marks: {MARKS['best']} best of its cell; {MARKS['tied']} not significantly worse than the best "
                 f"(paired on the same episodes, Wilcoxon signed-rank, Holm-corrected across the table, "
                 f"alpha {stats.ALPHA}); no mark: significantly worse; {MARKS['unpaired']} the episodes differ, so "
                 "Welch's unpaired t-test decided. Ranks: the best and the rows after it, up to the first "
                 "significantly worse one, share rank 1, and so on.")
    if (frame["transductive"]).any():
        notes.append("transductive = yes: queries of an episode are normalised together (batch statistics), "
                     "so each prediction sees the other queries.")
    if frame["stale"].any():
        notes.append("stale: produced by older code than the installed algorithm (its code_version differs).")
    if frame["allocator"].nunique() > 1:
        notes.append("allocator: keep = trained with freed memory kept in the process (mtbench/allocator.py), "
                     "system = with the system allocator's defaults (results from before mtbench set it). Same "
                     "numbers, but keep avoids a page fault per buffer per step, so its train s is lower on the "
                     "CPU: compare times within one allocator.")
    if superseded:
        notes.append(f"{superseded} result file(s) superseded by a newer run of the same experiment, cell and seed.")
    if friedman:
        notes.append(f"Friedman test over {friedman['n_cells']} cells and {len(friedman['average_ranks'])} "
                     f"experiments present in all of them: chi2 = {friedman['statistic']:.2f}, "
                     f"p = {friedman['p']:.3g}; Nemenyi critical difference of average ranks = {friedman['cd']:.2f}.")
    return notes


def _provenance(table: pd.DataFrame) -> dict:
    def unique(col: str) -> list[str]:
        return sorted({str(v) for v in table[col] if v is not None and v == v})
    return {"result_files": int(table["run_id"].nunique()), "git_commits": unique("git_commit"),
            "mtbench_versions": unique("mtbench_version"), "torch_versions": unique("torch_version"),
            "devices": unique("device"), "budgets": unique("budget"), "suites": unique("suite"),
            "rendered_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}

