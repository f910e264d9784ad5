"""Suites are data: which algorithms, datasets, protocols, seeds and episode counts make one benchmark.

A suite is a TOML file (or a :class:`Suite` built in Python) such as::

    name = "fewshot"
    algorithms = ["protonet", "finetune", { name = "maml", label = "maml-10-steps", params = { test_inner_steps = 10 } }]
    metrics = ["accuracy"]
    episodes = 600
    queries = 15
    seeds = [0]
    [[datasets]]
    name = "omniglot"
    params = { split = "vinyals" }
    [[protocols]]
    ways = 5
    shots = 1
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import SuiteError


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset with its parameters, and the split the test episodes come from."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    train: "DatasetEntry | None" = None  # cross-domain: base classes from another dataset
    label: str = ""  # display name on the leaderboard (e.g. two entries of one plugin with other params)

    @property
    def base(self) -> "DatasetEntry":
        """The dataset whose train/val splits the algorithms are fitted on."""
        return self.train or self

    @property
    def display_label(self) -> str:
        """The suite's label, else ``name`` or ``base→name`` for a cross-domain entry (recorded with results)."""
        if self.label:
            return self.label
        if self.train and (self.train.name, self.train.params) != (self.name, self.params):
            return f"{self.train.name}→{self.name}"
        return self.name

    def identity(self) -> dict[str, Any]:
        out = {"dataset": self.name, "params": self.params, "split": self.split}
        if self.train:
            out["train"] = self.train.identity()
        return out


@dataclass(frozen=True)
class AlgorithmEntry:
    """An algorithm of a suite; ``label`` names a variant (e.g. MAML evaluated after 10 steps)."""

    name: str
    label: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Reference:
    """A published figure shown beside ours (with its citation)."""

    algorithm: str
    dataset: str
    n_way: int
    k_shot: int
    value: float
    source: str
    metric: str = "accuracy"
    ci95: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    algorithms: tuple[AlgorithmEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    protocols: tuple[tuple[int, int], ...]  # (n_way, k_shot)
    n_query: int = 15
    n_episodes: int = 600
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ("accuracy",)
    description: str = ""
    default_budget: str = "quick"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # algorithm -> overrides (all budgets)
    budgets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # budget -> algorithm -> overrides
    references: tuple[Reference, ...] = ()
    source: str = ""

    def overrides(self, entry: AlgorithmEntry, budget: str) -> dict[str, Any]:
        """The suite's parameter overrides for one algorithm entry at one budget (variant params last)."""
        out: dict[str, Any] = {}
        for key in dict.fromkeys([entry.name, entry.id]):
            out.update(self.params.get(key, {}))
            out.update(self.budgets.get(budget, {}).get(key, {}))
        return {**out, **entry.params}

    def entry(self, name: str) -> AlgorithmEntry:
        """The suite's entry with this label or name, else a plain entry (``--algorithm`` outside the suite)."""
        for entry in self.algorithms:
            if name == entry.id:
                return entry
        return AlgorithmEntry(name)


# Names that become file and folder names: letters, digits, '-', '_', '.', '+', '=' (no separators, no '..').
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,79}$")


def check_name(value: str, what: str) -> str:
    """``value`` if it is safe as one path component, else a SuiteError (no ``/``, ``..``, empty or absolute)."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise SuiteError(f"{what} {value!r} is not a safe name: use 1-80 letters, digits, '-', '_', '.', '+' or '=', "
                         f"starting with a letter or digit (it names files under the results folder)")
    return value


def check_count(value: Any, what: str, minimum: int) -> int:
    """An integer of at least ``minimum`` (episodes, queries, ways, shots, seeds), else a SuiteError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SuiteError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def validate_suite(suite: Suite) -> Suite:
    """Names safe as file names and counts in range, for suites from files and from Python alike."""
    where = f"suite {suite.source or suite.name!r}"
    check_name(suite.name, f"{where}: name")
    for entry in suite.algorithms:
        check_name(entry.id, f"{where}: algorithm label")
    for entry in suite.datasets:
        check_name(getattr(entry, "label", "") or entry.name, f"{where}: dataset label")
    check_count(suite.n_query, f"{where}: queries", 1)
    check_count(suite.n_episodes, f"{where}: episodes", 1)
    if not suite.seeds:
        raise SuiteError(f"{where}: seeds must not be empty")
    for seed in suite.seeds:
        check_count(seed, f"{where}: seeds", 0)
    for ways, shots in suite.protocols:
        check_count(ways, f"{where}: protocols ways", 1)
        check_count(shots, f"{where}: protocols shots", 1)
    return suite


def load_suite(obj: Suite | str | Path) -> Suite:
    """A :class:`Suite` from itself or from a TOML file path."""
    if isinstance(obj, Suite):
        return obj
    path = Path(obj)
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite file {path} is not valid TOML: {exc}") from None
    return parse_suite(raw, str(path))


class _Reader:
    """Typed access to a parsed TOML table, failing with the key and the expected type."""

    def __init__(self, raw: dict[str, Any], where: str, prefix: str = "") -> None:
        self.raw, self.where, self.prefix = raw, where, prefix

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., item: type | None = None) -> Any:
        name = f"{self.prefix}{key}"
        if key not in self.raw:
            if default is ...:
                raise SuiteError(f"suite {self.where}: missing key {name!r} ({_type_name(kind, item)})")
            return default
        value = self.raw[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if ok and item is not None:
            ok = all(isinstance(v, item) and not isinstance(v, bool) or item is bool for v in value)
        if not ok:
            raise SuiteError(f"suite {self.where}: key {name!r} must be {_type_name(kind, item)}, "
                             f"got {value!r} ({type(value).__name__})")
        return value

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.raw) - allowed)
        if extra:
            raise SuiteError(f"suite {self.where}: unknown key {self.prefix}{extra[0]!r}; "
                             f"allowed: {', '.join(sorted(allowed))}")


def _type_name(kind: Any, item: type | None) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table",
             bool: "true or false"}
    if item is not None:
        return f"a list of {names.get(item, item.__name__).split(' ', 1)[1]}s"
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


_TOP_KEYS = {"name", "description", "algorithms", "datasets", "protocols", "queries", "episodes", "seeds",
             "metrics", "default_budget", "params", "budgets", "references"}


def parse_suite(raw: dict[str, Any], where: str) -> Suite:
    r = _Reader(raw, where)
    r.unknown(_TOP_KEYS)
    datasets = []
    for i, entry in enumerate(r.get("datasets", list, item=dict)):
        d = _Reader(entry, where, f"datasets[{i}].")
        d.unknown({"name", "label", "params", "split", "train"})
        train = None
        if "train" in entry:
            t = _Reader(d.get("train", dict), where, f"datasets[{i}].train.")
            t.unknown({"name", "params"})
            train = DatasetEntry(t.get("name", str), dict(t.get("params", dict, {})), "train")
        datasets.append(DatasetEntry(d.get("name", str), dict(d.get("params", dict, {})),
                                     d.get("split", str, "test"), train, d.get("label", str, "")))
    protocols = []
    for i, entry in enumerate(r.get("protocols", list, item=dict)):
        p = _Reader(entry, where, f"protocols[{i}].")
        p.unknown({"ways", "shots"})
        protocols.append((p.get("ways", int), p.get("shots", int)))
    algorithms = []
    for i, item in enumerate(r.get("algorithms", list)):
        if isinstance(item, str):
            algorithms.append(AlgorithmEntry(item))
            continue
        if not isinstance(item, dict):
            raise SuiteError(f"suite {where}: key 'algorithms[{i}]' must be a string or a table, got {item!r}")
        a = _Reader(item, where, f"algorithms[{i}].")
        a.unknown({"name", "label", "params"})
        algorithms.append(AlgorithmEntry(a.get("name", str), a.get("label", str, ""), dict(a.get("params", dict, {}))))
    references = []
    for i, entry in enumerate(r.get("references", list, [], item=dict)):
        f = _Reader(entry, where, f"references[{i}].")
        f.unknown({"algorithm", "dataset", "ways", "shots", "value", "ci95", "source", "metric", "note"})
        references.append(Reference(f.get("algorithm", str), f.get("dataset", str), f.get("ways", int),
                                    f.get("shots", int), float(f.get("value", (int, float))), f.get("source", str),
                                    f.get("metric", str, "accuracy"), f.get("ci95", (int, float), None),
                                    f.get("note", str, "")))
    params = r.get("params", dict, {})
    budgets = r.get("budgets", dict, {})
    for key, table in [*(("params." + k, v) for k, v in params.items()),
                       *(("budgets." + k, v) for k, v in budgets.items())]:
        if not isinstance(table, dict):
            raise SuiteError(f"suite {where}: key {key!r} must be a table, got {table!r}")
    if not datasets or not protocols:
        raise SuiteError(f"suite {where}: needs at least one [[datasets]] and one [[protocols]] entry")
    return validate_suite(Suite(
        name=r.get("name", str), description=r.get("description", str, ""),
        algorithms=tuple(algorithms), datasets=tuple(datasets),
        protocols=tuple(protocols), n_query=r.get("queries", int, 15), n_episodes=r.get("episodes", int, 600),
        seeds=tuple(r.get("seeds", list, [0], item=int)), metrics=tuple(r.get("metrics", list, ["accuracy"], item=str)),
        default_budget=r.get("default_budget", str, "quick"), params=params, budgets=budgets,
        references=tuple(references), source=where,
    ))
