"""Plan a suite: which cells, with every setting resolved and checked (before any data is loaded).

A cell is (algorithm, dataset, ways, shots, seed). Executing cells is :mod:`mtbench.execute` (one cell,
anywhere), :mod:`mtbench.executors` (where cells run) and :mod:`mtbench.driver` (checks, dispatch, storage);
:class:`Runner` is the in-process combination of them. The core names no algorithm.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .algorithm import FAMILIES, Algorithm, Target
from .driver import Driver, RunSummary
from .errors import MtbenchError
from .execute import Environment
from .plugins import Plugins
from .results import ResultStore
from .suites import AlgorithmEntry, DatasetEntry, Suite, check_count, validate_suite

__all__ = ["BUDGETS", "Cell", "RunSummary", "Runner", "plan_cells", "resolve_params"]

BUDGETS = ("quick", "standard", "paper")
SAMPLER_VERSION = "episode-sampler/1"


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
    # Stamped before running (mtbench.execute.CellRunner.stamp): what the result and fit keys must notice.
    device: str = ""  # device kind: cpu, cuda
    code_versions: dict[str, str] = field(default_factory=dict)
    data_fingerprint: dict[str, str] = field(default_factory=dict)

    @property
    def algorithm_name(self) -> str:
        return self.plugin or self.algorithm

    def spec(self) -> dict[str, Any]:
        return {"suite": self.suite, "algorithm": self.algorithm, "plugin": self.algorithm_name, "params": self.params,
                "dataset": self.dataset.name, "dataset_params": self.dataset.params, "split": self.dataset.split,
                "train_dataset": self.dataset.base.name, "train_dataset_params": self.dataset.base.params,
                "n_way": self.n_way, "k_shot": self.k_shot, "n_query": self.n_query,
                "n_episodes": self.n_episodes, "seed": self.seed, "metrics": list(self.metrics),
                "budget": self.budget, "sampler": SAMPLER_VERSION, "device_kind": self.device,
                "code_versions": self.code_versions, "data_fingerprint": self.data_fingerprint}

    @property
    def run_id(self) -> str:
        return (f"{self.algorithm}__{self.dataset.name}__{self.n_way}w{self.k_shot}s{self.n_query}q"
                f"__seed{self.seed}__{_digest(self.spec())}")

    @property
    def legacy_run_id(self) -> str:
        """The run id before keys held code versions, device kind and data fingerprints (api_version 1 files
        written until then): such a result still counts as done, marked as of unknown code, not retrained."""
        spec = {k: v for k, v in self.spec().items() if k not in ("device_kind", "code_versions", "data_fingerprint")}
        return (f"{self.algorithm}__{self.dataset.name}__{self.n_way}w{self.k_shot}s{self.n_query}q"
                f"__seed{self.seed}__{_digest(spec)}")

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


class Runner:
    """Runs cells in this process: a :class:`~mtbench.driver.Driver` with the ``local`` executor.

    Kept for library users and tests; the CLI builds a Driver with the executor the user chose.
    """

    def __init__(self, plugins: Plugins, store: ResultStore, device: torch.device, data_dir: Path | None,
                 cache_dir: Path, data_cache: Path, reporter: Any = None,
                 on_result: Callable[[Path], None] | None = None, retrain: bool = False) -> None:
        environment = Environment(str(device), data_dir, Path(cache_dir), Path(data_cache), retrain=retrain)
        self.driver = Driver(plugins, store, environment, reporter=reporter, on_result=on_result)

    def run(self, cells: list[Cell], force: bool = False) -> RunSummary:
        return self.driver.run(cells, force=force)
