"""Result files as tables: one row per run with everything that identifies and qualifies it.

A leaderboard row is an *experiment*: the dataset's identity (plugin, parameters, test split and the
base dataset of a cross-domain cell), the algorithm's label and resolved hyperparameters, the budget
and the evaluation mode. This module derives those fields from a result file once, so that the
leaderboard, ``mtbench compare`` and the plots agree on what counts as the same experiment, and runs
of different identity are never pooled.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

RUN_COLUMNS = ("run_id", "suite", "dataset", "dataset_params", "split", "train_dataset", "train_dataset_params",
               "dataset_key", "dataset_label", "algorithm", "plugin", "kind", "params", "budget", "backbone",
               "transductive", "experiment_key", "n_way", "k_shot", "n_query", "protocol", "seed", "device",
               "digest", "metric", "values", "n_episodes", "train_s", "train_steps", "fit_s", "adapt_ms",
               "peak_mb", "code_version", "git_commit", "mtbench_version", "torch_version", "deviations",
               "validation", "allocator")


def digest(obj: Any, n: int = 12) -> str:
    """A short stable hash of JSON-able data (keys sorted), for identities."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def protocol_id(n_way: int, k_shot: int) -> str:
    """'5w1s', the protocol as the CLI spells it."""
    return f"{int(n_way)}w{int(k_shot)}s"


def dataset_identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two cells' test data the same: plugin, parameters, split, and the training base."""
    train = spec.get("train_dataset") or spec.get("dataset")
    train_params = spec.get("train_dataset_params", spec.get("dataset_params", {})) or {}
    return {"dataset": spec.get("dataset"), "params": spec.get("dataset_params") or {}, "split": spec.get("split"),
            "train": {"dataset": train, "params": train_params}}


def derived_dataset_label(spec: Mapping[str, Any]) -> str:
    """The suite's label if recorded, else ``name`` or ``base→name`` for a cross-domain cell."""
    if spec.get("dataset_label"):
        return str(spec["dataset_label"])
    ident = dataset_identity(spec)
    if ident["train"] != {"dataset": ident["dataset"], "params": ident["params"]}:
        return f"{ident['train']['dataset']}→{ident['dataset']}"
    return str(ident["dataset"])


def transductive_mode(run: Mapping[str, Any]) -> bool:
    """Whether queries influence each other's predictions: the recorded BatchNorm mode, else the tags.

    ``fit_info["batchnorm"]`` says what the fitted model actually does at test time (for example MAML's
    ``bn="support"`` is not transductive although MAML's usual mode is), so it wins over the class tag.
    """
    text = str((run.get("fit_info") or {}).get("batchnorm") or "").lower()
    if "non-transductive" in text:  # an explicit word wins over the description of the statistics
        return False
    if "transductive" in text:
        return True
    if "running statistics at test" in text or "support set" in text or "frozen" in text:
        return False
    if "batch statistics" in text:
        return True
    return bool(((run.get("algorithm") or {}).get("tags") or {}).get("transductive", False))


def _validation_series(fit_info: Mapping[str, Any]) -> list[tuple[int, str, float]]:
    """(step, key, value) of the meta-validation history (keys such as ``val_accuracy``)."""
    out = []
    for row in ((fit_info.get("history") or {}).get("validation") or []):
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                out.append((int(row["step"]), key, float(value)))
    return out


def run_rows(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per (run, metric): identity, per-episode values (sorted by episode) and costs."""
    spec = run["spec"]
    timings = run.get("timings") or {}
    fit_info = run.get("fit_info") or {}
    env = run.get("environment") or {}
    params = spec.get("params") or {}
    episodes = pd.DataFrame(run.get("rows") or [], columns=run.get("columns"))
    algorithm = spec.get("algorithm")
    transductive = transductive_mode(run)
    ident = dataset_identity(spec)
    base = {
        "run_id": run.get("run_id"), "suite": spec.get("suite"), "dataset": ident["dataset"],
        "dataset_params": ident["params"], "split": ident["split"], "train_dataset": ident["train"]["dataset"],
        "train_dataset_params": ident["train"]["params"], "dataset_key": digest(ident),
        "dataset_label": derived_dataset_label(spec), "algorithm": algorithm,
        "plugin": spec.get("plugin") or (run.get("algorithm") or {}).get("name") or algorithm,
        "kind": spec.get("kind") or (run.get("algorithm") or {}).get("kind"), "params": params,
        "budget": spec.get("budget"), "backbone": params.get("backbone"), "transductive": transductive,
        "n_way": int(spec["n_way"]), "k_shot": int(spec["k_shot"]), "n_query": spec.get("n_query"),
        "protocol": protocol_id(spec["n_way"], spec["k_shot"]), "seed": spec.get("seed"),
        "device": spec.get("device") or env.get("device"), "digest": (run.get("episodes") or {}).get("digest"),
        "train_s": timings.get("train_s"), "train_steps": timings.get("train_steps"), "fit_s": timings.get("fit_s"),
        "adapt_ms": timings.get("adapt_ms_mean"), "peak_mb": fit_info.get("peak_memory_mb"),
        "code_version": (run.get("algorithm") or {}).get("version"), "git_commit": env.get("git_commit"),
        "mtbench_version": env.get("mtbench"), "torch_version": env.get("torch"),
        "deviations": [str(d) for d in (fit_info.get("deviations") or [])],
        "validation": _validation_series(fit_info),
        # results from before mtbench set the allocator (mtbench/allocator.py) ran with the system's
        "allocator": "keep" if str((env.get("worker") or {}).get("malloc", "")).startswith("keep") else "system",
    }
    base["experiment_key"] = digest([ident, algorithm, base["plugin"], params, base["budget"], transductive])
    if base["adapt_ms"] is None and "adapt_ms" in episodes:
        base["adapt_ms"] = float(episodes["adapt_ms"].mean())
    out = []
    for metric, rows in episodes.groupby("metric", sort=False):
        rows = rows.sort_values("episode")
        values = pd.Series(rows["value"].to_numpy(dtype=float), index=rows["episode"].to_numpy(dtype=int))
        out.append({**base, "metric": metric, "values": values, "n_episodes": len(values)})
    return out


def runs_table(runs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (run, metric) over many result files (see :func:`run_rows`)."""
    records = [record for run in runs for record in run_rows(run)]
    return pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))


def episodes_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Tidy: one row per run x metric x episode, with the identity columns of :func:`runs_table`."""
    keep = [c for c in table.columns if c not in ("values", "validation", "params", "dataset_params",
                                                   "train_dataset_params", "deviations")]
    frames = []
    for _, row in table.iterrows():
        values: pd.Series = row["values"]
        part = pd.DataFrame({"episode": values.index, "value": values.to_numpy()})
        for col in keep:
            part[col] = row[col]
        frames.append(part)
    if not frames:
        return pd.DataFrame(columns=["episode", "value", *keep])
    return pd.concat(frames, ignore_index=True)


def differing_keys(dicts: list[Mapping[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every dict (a missing key counts as a value)."""
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k, "<unset>"), sort_keys=True, default=str)
                                    for d in dicts}) > 1]


def settings_label(values: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``meta_iterations=1500, budget=quick``: the settings that tell rows of one algorithm apart."""
    def show(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:g}"
        return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
    return ", ".join(f"{k}={show(values[k]) if k in values else 'default'}" for k in keys)


def mean_or_none(values: Iterable[Any]) -> float | None:
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))],
                     dtype=float)
    return float(arr.mean()) if len(arr) else None
