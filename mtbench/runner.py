"""Run a suite: plan its cells, fit each algorithm on the base classes, evaluate on shared episodes.

The runner owns everything that decides comparability (splits, episode sampling, seeds, metrics,
timings) and names no algorithm. A cell is (algorithm, dataset, ways, shots, seed); cells whose fit
would be identical (same algorithm, parameters, data, seed and ``fit_key``) share one fit.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .algorithm import FAMILIES, Algorithm, FitData, Target
from .context import RunContext
from .data import DatasetSplits
from .episode import make_sampler
from .environment import environment_info
from .errors import DivergedError, MtbenchError
from .evaluation import evaluate
from .fitstate import cached_fit
from .plugins import Plugins
from .results import ROW_COLUMNS, ResultStore
from .suites import AlgorithmEntry, DatasetEntry, Suite, check_count, validate_suite

BUDGETS = ("quick", "standard", "paper")
SAMPLER_VERSION = "episode-sampler/1"
CI_FORMULA = "1.96 * std(ddof=1) / sqrt(n_episodes)"


def _digest(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Cell:
    """One (algorithm, dataset, ways, shots, seed) run of a suite, with every setting resolved."""

    suite: str
    algorithm: str
    params: dict[str, Any]
    dataset: DatasetEntry
    n_way: int
    k_shot: int
    n_query: int
    n_episodes: int
    seed: int
    metrics: tuple[str, ...]
    budget: str
    plugin: str = ""  # the registered algorithm; ``algorithm`` is its label in this suite

    @property
    def algorithm_name(self) -> str:
        return self.plugin or self.algorithm

    def spec(self) -> dict[str, Any]:
        return {"suite": self.suite, "algorithm": self.algorithm, "plugin": self.algorithm_name, "params": self.params,
                "dataset": self.dataset.name, "dataset_params": self.dataset.params, "split": self.dataset.split,
                "train_dataset": self.dataset.base.name, "train_dataset_params": self.dataset.base.params,
                "n_way": self.n_way, "k_shot": self.k_shot, "n_query": self.n_query,
                "n_episodes": self.n_episodes, "seed": self.seed, "metrics": list(self.metrics),
                "budget": self.budget, "sampler": SAMPLER_VERSION}

    @property
    def run_id(self) -> str:
        return (f"{self.algorithm}__{self.dataset.name}__{self.n_way}w{self.k_shot}s{self.n_query}q"
                f"__seed{self.seed}__{_digest(self.spec())}")

    @property
    def target(self) -> Target:
        return Target(self.n_way, self.k_shot, self.n_query)


def resolve_params(cls: type[Algorithm], suite: Suite, entry: AlgorithmEntry, budget: str,
                   overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Defaults < the algorithm's budget profile < the suite's overrides < command-line overrides.

    Every value is typed and range-checked where it comes from (before any data is loaded).
    """
    alg = cls()
    alg.set_params(**cls.check_params(cls.budgets.get(budget, {}), f"{cls.name} budget {budget!r}"))
    alg.set_params(**cls.check_params(suite.overrides(entry, budget), f"suite {suite.source or suite.name}"))
    alg.set_params(**cls.check_params((overrides or {}).get(entry.id, {}), f"--set {entry.id}"))
    return alg.get_params()


def checked_dataset(entry: DatasetEntry, plugins: Plugins, suite: Suite) -> DatasetEntry:
    """The entry with its parameters (and its base dataset's) typed and range-checked by the dataset class."""
    where = f"suite {suite.source or suite.name}: dataset {entry.name}"
    params = plugins.datasets.get(entry.name).check_params(entry.params, where)
    train = entry.train and replace(entry.train, params=plugins.datasets.get(entry.train.name).check_params(
        entry.train.params, f"{where} train dataset {entry.train.name}"))
    return replace(entry, params=params, train=train)


def plan_cells(suite: Suite, plugins: Plugins, budget: str | None = None, algorithms: list[str] | None = None,
               seeds: list[int] | None = None, n_episodes: int | None = None,
               overrides: dict[str, dict[str, Any]] | None = None,
               protocols: list[tuple[int, int]] | None = None) -> list[Cell]:
    """Every cell of the suite, with names checked (unknown names fail here, before any training)."""
    validate_suite(suite)
    if n_episodes is not None:
        check_count(n_episodes, "--episodes", 1)
    for seed in seeds or ():
        check_count(seed, "--seed", 0)
    budget = budget or suite.default_budget
    if budget not in BUDGETS:
        raise MtbenchError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    entries = [suite.entry(name) for name in algorithms] if algorithms else list(suite.algorithms)
    classes = {entry.id: plugins.algorithms.get(entry.name) for entry in entries}
    for name, cls in classes.items():
        if cls.kind not in FAMILIES:
            raise MtbenchError(f"algorithm {name!r} declares kind {cls.kind!r}; expected one of {FAMILIES}")
    datasets = [checked_dataset(entry, plugins, suite) for entry in suite.datasets]
    for metric in suite.metrics:
        plugins.metrics.get(metric)
    for name in (overrides or {}):
        if name not in classes:
            raise MtbenchError(f"--set names algorithm {name!r}, which is not in this run ({', '.join(classes)})")
    params = {e.id: resolve_params(classes[e.id], suite, e, budget, overrides) for e in entries}
    chosen = list(suite.protocols)
    if protocols:
        missing = [p for p in protocols if p not in chosen]
        if missing:
            have = ", ".join(f"{w}w{k}s" for w, k in chosen)
            raise MtbenchError(f"--protocol {missing[0][0]}w{missing[0][1]}s is not in suite {suite.name!r} ({have})")
        chosen = [p for p in chosen if p in protocols]
    return [Cell(suite.name, e.id, params[e.id], entry, n_way, k_shot, suite.n_query,
                 suite.n_episodes if n_episodes is None else n_episodes, seed, suite.metrics, budget, e.name)
            for entry in datasets for (n_way, k_shot) in chosen
            for seed in (seeds or suite.seeds) for e in entries]


def training_cost(fit_info: dict[str, Any]) -> dict[str, Any]:
    """Steps and seconds of the training the fit used, even when shared (a cached pretraining)."""
    history = fit_info.get("history") or {}
    return {"train_steps": history.get("steps"), "train_s": history.get("seconds")}


def check_rows(rows: list[list[Any]], cell: Cell) -> None:
    """NaN or infinity is never stored as a score: it means the model diverged, not that it scored."""
    for episode, metric, value, _ in rows:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DivergedError(f"{cell.algorithm} on {cell.dataset.name} {cell.n_way}w{cell.k_shot}s seed {cell.seed}: "
                                f"{metric} is {value} on episode {episode} (the fitted model predicts NaN or inf); "
                                f"nothing stored")


@dataclass
class RunSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False


class Runner:
    """Executes cells and stores one result file per cell."""

    def __init__(self, plugins: Plugins, store: ResultStore, device: torch.device, data_dir: Path | None,
                 cache_dir: Path, data_cache: Path, reporter: Any = None,
                 on_result: Callable[[Path], None] | None = None) -> None:
        self.plugins, self.store, self.device, self.data_dir = plugins, store, device, data_dir
        self.cache_dir, self.data_cache = Path(cache_dir), Path(data_cache)
        self.reporter = reporter
        self.on_result = on_result
        self._datasets: dict[str, DatasetSplits] = {}
        self._environment: dict[str, Any] | None = None
        self._fits: dict[str, tuple[dict[str, Any], bool]] = {}

    # -- data ---------------------------------------------------------------------------------------
    def dataset(self, entry: DatasetEntry) -> DatasetSplits:
        key = _digest([entry.name, entry.params])
        if key not in self._datasets:
            ds = self.plugins.datasets.get(entry.name)().set_params(**entry.params)
            self._datasets[key] = ds.load(self.data_dir, self.data_cache)
        return self._datasets[key]

    def check(self, cell: Cell) -> None:
        base = cell.dataset.base
        self.dataset(base).split("train", base.name)
        splits = self.dataset(cell.dataset)
        test = splits.split(cell.dataset.split, cell.dataset.name)
        make_sampler(test, cell.n_way, cell.k_shot, cell.n_query, cell.seed,
                     f"{cell.dataset.name} split {cell.dataset.split!r}")
        task = self.plugins.datasets.get(cell.dataset.name).task
        for name in cell.metrics:
            metric = self.plugins.metrics.get(name)
            if metric.task != task:
                raise MtbenchError(f"metric {name!r} is for {metric.task} but dataset {cell.dataset.name!r} "
                                   f"is {task}; pick a {task} metric in the suite")

    def context(self, seed: int, budget: str, cache: str = "artifacts") -> RunContext:
        kwargs = {"reporter": self.reporter} if self.reporter is not None else {}
        return RunContext(self.device, seed, budget, self.cache_dir / cache, self.plugins, **kwargs)

    # -- run ----------------------------------------------------------------------------------------
    def run(self, cells: list[Cell], force: bool = False) -> RunSummary:
        summary = RunSummary()
        pending = []
        for cell in cells:
            if not force and self.store.has(cell.suite, cell.run_id):
                summary.skipped.append(cell.run_id)
            else:
                pending.append(cell)
        if pending:
            self.store.check_writable()
        for cell in pending:  # every bad request fails before any training starts
            self.check(cell)
        if pending:
            self.environment()  # the code (git commit) that trains is the code at the start of the run
        try:
            for cell in pending:
                path = self.run_cell(cell)
                summary.done.append(path)
                if self.on_result:
                    self.on_result(path)
        except KeyboardInterrupt:
            summary.interrupted = True
        return summary

    def fit(self, cell: Cell, test: Any) -> tuple[Algorithm, dict[str, Any]]:
        """Fit (or load the stored fit of) the cell's algorithm; returns it and its timings."""
        cls = self.plugins.algorithms.get(cell.algorithm_name)
        alg = cls().set_params(**cell.params)
        base = cell.dataset.base
        identity = {"dataset": base.name, "params": base.params}
        fit_params = {k: v for k, v in cell.params.items() if k not in cls.adapt_params}
        key = {"kind": "fit", "algorithm": cell.algorithm_name, "version": cls.code_version(), "params": fit_params,
               "data": identity, "seed": cell.seed, "budget": cell.budget, "device": self.device.type,
               "fit_key": alg.fit_key(cell.target)}
        if alg.tags.uses_unlabeled_target:
            key["unlabeled_target"] = cell.dataset.identity()
        splits = self.dataset(base)
        data = FitData(train=splits.split("train", base.name), val=splits.splits.get("val"),
                       target=cell.target, seed=cell.seed,
                       unlabeled_target=test.images if alg.tags.uses_unlabeled_target else None,
                       identity=identity)
        ctx = self.context(cell.seed, cell.budget)

        def make() -> dict[str, Any]:
            torch.manual_seed(cell.seed)
            start = time.perf_counter()
            alg.fit(data, ctx)
            return {"algorithm": alg, "fit_s": time.perf_counter() - start}

        memo = _digest(key, 32)
        in_memory = memo in self._fits
        if not in_memory:  # one fit in memory at a time; earlier fits are reloaded from disk
            self._fits = {memo: cached_fit(self.cache_dir / "fits", key, alg, data, ctx, make)}
        stored, cached = self._fits[memo]
        cached = cached or in_memory
        stored = {**stored, "algorithm": copy.deepcopy(stored["algorithm"])}
        fitted = stored["algorithm"].set_params(**{k: cell.params[k] for k in cls.adapt_params})
        return fitted, {"fit_s": round(stored["fit_s"], 3), "fit_reused": cached}

    def run_cell(self, cell: Cell) -> Path:
        splits = self.dataset(cell.dataset)
        test = splits.split(cell.dataset.split, cell.dataset.name)
        alg, timings = self.fit(cell, test)
        rows, eval_info = self.evaluate(alg, cell, test)
        check_rows(rows, cell)
        cls = type(alg)
        payload = {
            "spec": {**cell.spec(), "kind": cls.kind, "device": str(self.device), "ci_formula": CI_FORMULA},
            "dataset_info": splits.describe(),
            "train_dataset_info": self.dataset(cell.dataset.base).describe(),
            "algorithm": {"name": cls.name, "kind": cls.kind, "version": cls.code_version(),
                          "provider": self.plugins.algorithms.providers[cls.name], "tags": alg.tags.as_dict(),
                          "citation": cls.citation},
            "timings": {**timings, **eval_info.pop("timings"), **training_cost(alg.fit_info())},
            "episodes": eval_info,
            "fit_info": alg.fit_info(),
            "environment": self.environment(),
            "columns": list(ROW_COLUMNS),
            "rows": rows,
        }
        return self.store.save(cell.suite, cell.run_id, payload)

    def environment(self) -> dict[str, Any]:
        if self._environment is None:
            self._environment = environment_info(self.device, self.plugins)
        return self._environment

    def evaluate(self, alg: Algorithm, cell: Cell, test: Any) -> tuple[list[list[Any]], dict[str, Any]]:
        """Adapt to each episode's support set and score its query set (see :func:`mtbench.evaluation.evaluate`)."""
        return evaluate(alg, cell, test, self.context(cell.seed, cell.budget), self.plugins, self.device)
