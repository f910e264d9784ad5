"""Executing one cell: load its data, fit (or reuse a cached fit), score its episodes, build its result.

``execute(cell, environment) -> payload`` is the whole job of a worker, wherever it runs (in process, a
worker process, a Ray task): it reads data and the fit cache but never the results store, and returns the
result as a JSON-able dict that the driver alone stores. :class:`CellRunner` holds what one process
keeps between cells (plugins, loaded datasets, the last fit), so cells that share data or a fit pay once.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from filelock import FileLock

from .algorithm import Algorithm, FitData
from .allocator import allocator_mode, keep_freed_memory
from .context import RunContext
from .data import DatasetSplits
from .episode import make_sampler
from .errors import DivergedError, MtbenchError
from .evaluation import evaluate
from .fitstate import cache_path, cached_fit
from .precision import full_float32
from .results import ROW_COLUMNS
from .suites import DatasetEntry
from .versions import code_versions

if TYPE_CHECKING:
    from .plugins import Plugins
    from .runner import Cell

CI_FORMULA = "1.96 * std(ddof=1) / sqrt(n_episodes)"


def digest(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Environment:
    """Where and how cells execute. Plain values only: a worker process or a Ray task rebuilds from it."""

    device: str = "cpu"  # a torch device string, already resolved ("cpu", "cuda", "cuda:1")
    data_dir: Path | None = None
    cache_dir: Path | None = None  # fits under cache_dir/fits, shared artifacts under cache_dir/artifacts
    data_cache: Path = Path(".")
    plugin_modules: tuple[str, ...] = ()  # what a worker loads to see the driver's plugins
    blocked: tuple[str, ...] = ()
    retrain: bool = False  # ignore fits cached before this run and cached artifacts (fit again, store the new fit)
    created: float = field(default_factory=time.time)  # when the run started: fits cached since are this run's

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


@dataclass
class Outcome:
    """What executing a cell gave: its payload, or the one-line error and the traceback of its failure."""

    payload: dict[str, Any] | None = None
    error: str = ""
    traceback: str = ""
    worker: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, exc: BaseException) -> "Outcome":
        text = str(exc).splitlines()[0] if str(exc) else ""
        line = text if isinstance(exc, MtbenchError) else f"{type(exc).__name__}: {text}".rstrip(": ")
        return cls(error=line, traceback="".join(traceback.format_exception(exc)))


def check_rows(rows: list[list[Any]], cell: "Cell") -> None:
    """NaN or infinity is never stored as a score: it means the model diverged, not that it scored."""
    for episode, metric, value, _ in rows:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DivergedError(f"{cell.algorithm} on {cell.dataset.name} {cell.n_way}w{cell.k_shot}s seed {cell.seed}: "
                                f"{metric} is {value} on episode {episode} (the fitted model predicts NaN or inf); "
                                f"nothing stored")


def training_cost(fit_info: dict[str, Any]) -> dict[str, Any]:
    """Steps and seconds of the training the fit used, even when shared (a cached pretraining).

    A fit that starts from a pretrained network (``fit_info["pretrain"]["history"]``: joint methods such as
    maml-l2sp, mtl, meta-baseline) pays for that pretraining too: ``train_s`` is the sum, ``pretrain_s`` its part.
    So does a fit that selected a hyperparameter with trial fits on validation (``fit_info["selection"]``):
    ``selection_s``.
    """
    history = fit_info.get("history") or {}
    cost = {"train_steps": history.get("steps"), "train_s": history.get("seconds")}
    pretrain = (fit_info.get("pretrain") or {}).get("history") or {}
    if pretrain.get("seconds") is not None and cost["train_s"] is not None:
        cost.update(train_s=round(cost["train_s"] + pretrain["seconds"], 3), pretrain_s=pretrain["seconds"],
                    pretrain_steps=pretrain.get("steps"))
    selection = fit_info.get("selection") or {}
    if selection.get("seconds") is not None and cost["train_s"] is not None:
        cost.update(train_s=round(cost["train_s"] + selection["seconds"], 3), selection_s=selection["seconds"])
    return cost


class CellRunner:
    """Executes cells in this process; keeps loaded datasets and the last fit between them."""

    def __init__(self, plugins: "Plugins", environment: Environment, reporter: Any = None) -> None:
        self.plugins, self.env, self.reporter = plugins, environment, reporter
        self.device = environment.torch_device
        keep_freed_memory()  # freed buffers are reused instead of page-faulting at every step (mtbench/allocator.py)
        if self.device.type == "cuda":
            full_float32()  # a GPU row differs from a CPU row by float32 rounding only (mtbench/precision.py)
        self._datasets: dict[str, DatasetSplits] = {}
        self._fits: dict[str, tuple[dict[str, Any], bool]] = {}

    # -- data ---------------------------------------------------------------------------------------
    def dataset(self, entry: DatasetEntry) -> DatasetSplits:
        key = digest([entry.name, entry.params])
        if key not in self._datasets:
            ds = self.plugins.datasets.get(entry.name)().set_params(**entry.params)
            self._datasets[key] = ds.load(self.env.data_dir, self.env.data_cache)
        return self._datasets[key]

    def fingerprint(self, entry: DatasetEntry) -> str:
        """The data's content fingerprint (see :meth:`mtbench.data.Dataset.fingerprint`)."""
        return self.plugins.datasets.get(entry.name)().set_params(**entry.params).fingerprint(self.env.data_dir)

    def stamp(self, cell: "Cell", memo: dict[str, Any] | None = None) -> "Cell":
        """The cell with what its keys must notice: code versions, device kind and the data's fingerprint.

        ``memo`` shares fingerprints and versions between the cells of one run (a folder is walked once).
        """
        memo = {} if memo is None else memo

        def once(key: Any, make: Any) -> Any:
            key = digest(key, 32)
            if key not in memo:
                memo[key] = make()
            return memo[key]
        base = cell.dataset.base
        fingerprints = {"test": once(["data", cell.dataset.name, cell.dataset.params],
                                     lambda: self.fingerprint(cell.dataset))}
        if cell.dataset.train is not None:
            fingerprints["train"] = once(["data", base.name, base.params], lambda: self.fingerprint(base))
        args = (cell.algorithm_name, cell.dataset.name, base.name, cell.params.get("backbone"))
        versions = once(["code", *args], lambda: code_versions(self.plugins, *args))
        return replace(cell, device=self.device.type, code_versions=versions, data_fingerprint=fingerprints)

    def check(self, cell: "Cell") -> None:
        """Every bad request of a cell (data, protocol, metrics) as a one-line error, before any training."""
        base = cell.dataset.base
        self.dataset(base).split("train", base.name)
        test = self.dataset(cell.dataset).split(cell.dataset.split, cell.dataset.name)
        make_sampler(test, cell.n_way, cell.k_shot, cell.n_query, cell.seed,
                     f"{cell.dataset.name} split {cell.dataset.split!r}")
        task = self.plugins.datasets.get(cell.dataset.name).task
        for name in cell.metrics:
            metric = self.plugins.metrics.get(name)
            if metric.task != task:
                raise MtbenchError(f"metric {name!r} is for {metric.task} but dataset {cell.dataset.name!r} "
                                   f"is {task}; pick a {task} metric in the suite")

    def context(self, seed: int, budget: str, cache: str | None = "artifacts") -> RunContext:
        kwargs = {"reporter": self.reporter} if self.reporter is not None else {}
        where = None if cache is None or self.env.cache_dir is None else Path(self.env.cache_dir) / cache
        return RunContext(self.device, seed, budget, where, self.plugins, **kwargs)

    # -- one cell -----------------------------------------------------------------------------------
    def fit(self, cell: "Cell", test: Any) -> tuple[Algorithm, dict[str, Any]]:
        """Fit (or load the stored fit of) the cell's algorithm; returns it and its timings."""
        cls = self.plugins.algorithms.get(cell.algorithm_name)
        alg = cls().set_params(**cell.params)
        base = cell.dataset.base
        # What the base data and shared artifacts (a pretrained encoder) depend on: a replaced image or an
        # edited backbone or loader gives new keys, so nothing trained on the old ones is reused.
        identity = {"dataset": base.name, "params": base.params,
                    "fingerprint": cell.data_fingerprint.get("train", cell.data_fingerprint.get("test", "")),
                    "code": {k: v for k, v in cell.code_versions.items() if k != "algorithm"}}
        fit_params = {k: v for k, v in cell.params.items() if k not in cls.adapt_params}
        key = {"kind": "fit", "algorithm": cell.algorithm_name, "version": cls.code_version(), "params": fit_params,
               "data": identity, "seed": cell.seed, "budget": cell.budget, "device": self.device.type,
               "fit_key": alg.fit_key(cell.target)}
        if alg.tags.uses_unlabeled_target:
            key["unlabeled_target"] = {**cell.dataset.identity(), "fingerprint": cell.data_fingerprint.get("test")}
        splits = self.dataset(base)
        data = FitData(train=splits.split("train", base.name), val=splits.splits.get("val"),
                       target=cell.target, seed=cell.seed,
                       unlabeled_target=test.images if alg.tags.uses_unlabeled_target else None,
                       identity=identity)
        retrain = self.env.retrain
        ctx = self.context(cell.seed, cell.budget, None if retrain else "artifacts")

        def make() -> dict[str, Any]:
            torch.manual_seed(cell.seed)
            start = time.perf_counter()
            alg.fit(data, ctx)
            return {"algorithm": alg, "fit_s": time.perf_counter() - start}

        memo = digest(key, 32)
        in_memory = memo in self._fits  # fitted by this process in this run
        if not in_memory:  # one fit in memory at a time; earlier fits are reloaded from disk
            fits = None if self.env.cache_dir is None else Path(self.env.cache_dir) / "fits"
            path = None if fits is None else cache_path(fits, key, "fit")
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            # Cells sharing a fit in other workers or runs wait for it instead of training it again.
            with FileLock(f"{path}.lock", thread_local=False) if path is not None else nullcontext():
                if retrain and path is not None and path.exists() and path.stat().st_mtime < self.env.created:
                    path.unlink()  # --retrain: a fit stored before this run is replaced
                self._fits = {memo: cached_fit(fits, key, alg, data, ctx, make)}
        stored, cached = self._fits[memo]
        cached = cached or in_memory
        stored = {**stored, "algorithm": copy.deepcopy(stored["algorithm"])}
        fitted = stored["algorithm"].set_params(**{k: cell.params[k] for k in cls.adapt_params})
        return fitted, {"fit_s": round(stored["fit_s"], 3), "fit_reused": cached}

    def execute(self, cell: "Cell") -> dict[str, Any]:
        """The cell's result payload (without the run's environment, which the driver adds)."""
        splits = self.dataset(cell.dataset)
        test = splits.split(cell.dataset.split, cell.dataset.name)
        alg, timings = self.fit(cell, test)
        rows, eval_info = evaluate(alg, cell, test, self.context(cell.seed, cell.budget), self.plugins, self.device)
        check_rows(rows, cell)
        cls = type(alg)
        return {
            "spec": {**cell.spec(), "kind": cls.kind, "device": str(self.device), "ci_formula": CI_FORMULA,
                     "dataset_label": cell.dataset.display_label},
            "dataset_info": splits.describe(),
            "train_dataset_info": self.dataset(cell.dataset.base).describe(),
            "algorithm": {"name": cls.name, "kind": cls.kind, "version": cls.code_version(),
                          "provider": self.plugins.algorithms.providers[cls.name], "tags": alg.tags.as_dict(),
                          "citation": cls.citation},
            "timings": {**timings, **eval_info.pop("timings"), **training_cost(alg.fit_info())},
            "episodes": eval_info,
            "fit_info": alg.fit_info(),
            "columns": list(ROW_COLUMNS),
            "rows": rows,
        }

    def outcome(self, cell: "Cell") -> Outcome:
        """:meth:`execute` with any failure caught as an :class:`Outcome` (Ctrl-C still stops the run)."""
        try:
            return Outcome(payload=self.execute(cell), worker={"torch_threads": torch.get_num_threads(),
                                                                "malloc": allocator_mode()})
        except Exception as exc:  # one failing cell never stops the others
            return Outcome.failure(exc)


_RUNNERS: dict[Environment, CellRunner] = {}


def worker_runner(environment: Environment) -> CellRunner:
    """This process's :class:`CellRunner` for ``environment`` (plugins loaded once per worker)."""
    if environment not in _RUNNERS:
        from .plugins import load_plugins
        _RUNNERS.clear()
        _RUNNERS[environment] = CellRunner(load_plugins(environment.plugin_modules, blocked=environment.blocked),
                                           environment)
    return _RUNNERS[environment]


def execute(cell: "Cell", environment: Environment) -> dict[str, Any]:
    """Run one cell and return its result payload; reads data and caches, never the results store."""
    return worker_runner(environment).execute(cell)
