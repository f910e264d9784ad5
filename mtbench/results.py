"""Result storage: one versioned JSON file per run (cell), written atomically, read back as a DataFrame.

Layout: ``<results_dir>/<suite>/<run_id>.json``. Each file holds the run spec, environment, timings and
per-episode rows (``columns`` + ``rows``, as in asv), so a leaderboard can always be re-derived.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

API_VERSION = 1
ROW_COLUMNS = ("episode", "metric", "value", "adapt_ms")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1, sort_keys=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """Reads and writes the result files of one results directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, suite: str, run_id: str) -> Path:
        return self.root / suite / f"{run_id}.json"

    def has(self, suite: str, run_id: str) -> bool:
        path = self.path(suite, run_id)
        if not path.exists():
            return False
        try:
            return json.loads(path.read_text()).get("api_version") == API_VERSION
        except (OSError, json.JSONDecodeError):
            return False  # an unreadable file is redone, not trusted

    def save(self, suite: str, run_id: str, payload: dict[str, Any]) -> Path:
        path = self.path(suite, run_id)
        write_json_atomic(path, {"api_version": API_VERSION, "run_id": run_id, **payload})
        return path

    def files(self, suite: str | None = None) -> Iterator[Path]:
        base = self.root / suite if suite else self.root
        yield from sorted(p for p in base.rglob("*.json") if not p.name.startswith("."))

    def load(self, suite: str | None = None) -> list[dict[str, Any]]:
        runs = []
        for path in self.files(suite):
            try:
                run = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if run.get("api_version") == API_VERSION:
                runs.append(run)
        return runs

    def frame(self, suite: str | None = None) -> pd.DataFrame:
        return runs_to_frame(self.load(suite))


SPEC_COLUMNS = ("suite", "dataset", "split", "algorithm", "kind", "n_way", "k_shot", "n_query", "seed",
                "budget", "device")


def params_digest(params: dict[str, Any]) -> str:
    """Runs of one algorithm with different hyperparameters never share a leaderboard row."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]


def steps_to_reach(fit_info: dict[str, Any], key: str, threshold: float) -> float | None:
    """The first validated training step whose score reached ``threshold`` (None if never or not recorded)."""
    for row in (fit_info.get("history") or {}).get("validation", []):
        if row.get(key, float("-inf")) >= threshold:
            return float(row["step"])
    return None


def runs_to_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x episode x metric, with the run's spec as columns (tidy)."""
    frames = []
    for run in runs:
        spec = run["spec"]
        rows = pd.DataFrame(run["rows"], columns=run["columns"])
        for col in SPEC_COLUMNS:
            rows[col] = spec.get(col)
        rows["run_id"] = run["run_id"]
        rows["params_hash"] = params_digest(spec.get("params", {}))
        rows["algorithm_version"] = run.get("algorithm", {}).get("version")
        rows["fit_s"] = run.get("timings", {}).get("fit_s")
        rows["train_steps"] = run.get("timings", {}).get("train_steps")
        rows["train_s"] = run.get("timings", {}).get("train_s")
        rows["steps_to_val90"] = steps_to_reach(run.get("fit_info", {}), "val_accuracy", 0.9)
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=[*SPEC_COLUMNS, *ROW_COLUMNS, "run_id", "params_hash", "algorithm_version", "fit_s",
                                     "train_steps", "train_s", "steps_to_val90"])
    return pd.concat(frames, ignore_index=True)
