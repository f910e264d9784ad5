"""Result storage: one versioned JSON file per run (cell), written atomically, read back as a DataFrame.

Layout: ``<results_dir>/<suite>/<run_id>.json``. Each file holds the run spec, environment, timings and
per-episode rows (``columns`` + ``rows``, as in asv), so a leaderboard can always be re-derived.

The store keeps data: a file it cannot read (truncated, malformed, holding NaN, or written by another
format version) is reported in one line and moved to ``<results_dir>/.quarantine/`` (never silently
skipped, never overwritten); files under dot-folders (``.cache``, ``.ipynb_checkpoints``) are not results;
files are written as strict JSON and with the permissions the umask gives (a shared folder stays readable).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from .errors import MtbenchError

API_VERSION = 1
ROW_COLUMNS = ("episode", "metric", "value", "adapt_ms")
QUARANTINE = ".quarantine"


class ResultsDirError(MtbenchError):
    """The results folder cannot hold results (a file, unwritable, a name outside it)."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader never sees half a file.

    Strict JSON (NaN or infinity is a ValueError, not a non-standard token); permissions follow the umask
    (``mkstemp`` alone would make the file 0600, unreadable by the other users of a shared folder).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1, sort_keys=False, default=str, allow_nan=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _refuse_constant(name: str) -> float:
    raise ValueError(f"holds {name}, which is not a number")


def read_result(path: Path) -> dict[str, Any]:
    """A result file's content, or ValueError saying why it cannot be trusted."""
    try:
        run = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno}; truncated?)") from None
    if not isinstance(run, dict):
        raise ValueError("is not a result (not a JSON object)")
    if run.get("api_version") != API_VERSION:
        raise ValueError(f"has format version {run.get('api_version')!r}; this mtbench reads version {API_VERSION}")
    if not isinstance(run.get("spec"), dict) or not isinstance(run.get("rows"), list) \
            or not isinstance(run.get("columns"), list) or not isinstance(run.get("run_id"), str):
        raise ValueError("lacks its spec, run_id, columns or rows")
    width = len(run["columns"])
    if not all(isinstance(row, list) and len(row) == width for row in run["rows"]):
        raise ValueError(f"has rows that do not match its {width} columns")
    for row in run["rows"]:
        for value in row:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("holds a non-finite value")
    return run


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class ResultStore:
    """Reads and writes the result files of one results directory.

    ``report`` receives one line per file moved aside (default: printed on stderr).
    """

    def __init__(self, root: Path | str, report: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.report = report or _stderr

    def path(self, suite: str, run_id: str) -> Path:
        path = self.root / suite / f"{run_id}.json"
        if not _inside(path, self.root) or len(path.name.encode()) > 255:
            raise ResultsDirError(f"result name {suite}/{run_id} would not be a file inside {self.root}")
        return path

    def check_writable(self) -> None:
        """Fail up front (one line) when results cannot be written: a file in the way, no permission, no space."""
        if self.root.exists() and not self.root.is_dir():
            raise ResultsDirError(f"results folder {self.root} is a file; pass a folder with --results-dir")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-") as fh:
                fh.write(b"x" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise ResultsDirError(f"results folder {self.root} is not writable ({exc.strerror or exc})") from None

    def has(self, suite: str, run_id: str) -> bool:
        """Whether a trustworthy result exists; an untrustworthy file is moved aside (and the cell redone)."""
        return self.load_one(suite, run_id) is not None

    def load_one(self, suite: str, run_id: str) -> dict[str, Any] | None:
        """One result, or None when absent or untrustworthy (then moved aside)."""
        path = self.path(suite, run_id)
        return self._read(path) if path.exists() else None

    def save(self, suite: str, run_id: str, payload: dict[str, Any]) -> Path:
        path = self.path(suite, run_id)
        if path.exists():
            self._read(path)  # an untrustworthy file there is moved aside, not overwritten
        write_json_atomic(path, {"api_version": API_VERSION, "run_id": run_id, **payload})
        return path

    def files(self, suite: str | None = None) -> Iterator[Path]:
        """Result files, skipping anything under a dot-folder or named with a leading dot."""
        base = self.root / suite if suite else self.root
        if suite is not None and not _inside(base, self.root):
            raise ResultsDirError(f"suite name {suite!r} would read outside {self.root}")
        for path in sorted(base.rglob("*.json")):
            if not any(part.startswith(".") for part in path.relative_to(self.root).parts):
                yield path

    def load(self, suite: str | None = None) -> list[dict[str, Any]]:
        runs = []
        for path in self.files(suite):
            run = self._read(path)
            if run is not None:
                runs.append(run)
        return runs

    def frame(self, suite: str | None = None) -> pd.DataFrame:
        return runs_to_frame(self.load(suite))

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return read_result(path)
        except OSError as exc:
            self.report(f"cannot read result file {path} ({exc.strerror or exc}); skipped")
            return None
        except ValueError as exc:
            self.quarantine(path, str(exc))
            return None

    def quarantine(self, path: Path, why: str) -> Path:
        """Move ``path`` under ``<root>/.quarantine/`` (same relative place, never replacing a file there)."""
        target = self.root / QUARANTINE / path.relative_to(self.root)
        if target.exists():
            target = target.with_name(f"{target.stem}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{target.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        self.report(f"result file {path} {why}; moved to {target}")
        return target


def _inside(path: Path, root: Path) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


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
