"""The algorithm contract: fit on base classes, adapt to a support set, predict the query set.

Rules (checked by :mod:`mtbench.testing`):

* ``__init__`` stores hyperparameters only; fitted state is set in ``fit`` and ends in ``_``.
* ``adapt`` must not mutate the fitted algorithm: it returns a new :class:`Predictor`.
* Devices come from the :class:`~mtbench.context.RunContext`; an algorithm never calls ``.cuda()``.
"""
from __future__ import annotations

import hashlib
import inspect
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from .data import LabeledImages
from .episode import EpisodeSampler, Support, TaskSampler, make_sampler
from .params import HasParams

if TYPE_CHECKING:
    from .context import RunContext

FAMILIES = ("transfer", "meta", "joint", "baseline")


@dataclass(frozen=True)
class Tags:
    """Declared properties that change how an algorithm is checked and what is recorded."""

    transductive: bool = False  # a query's prediction may depend on the other queries (e.g. BN batch stats)
    uses_unlabeled_target: bool = False  # fit() reads unlabeled images of the test split (e.g. DANN)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """The protocol a fitted model will be evaluated on (meta-learners often train on the same one)."""

    n_way: int
    k_shot: int
    n_query: int


@runtime_checkable
class Predictor(Protocol):
    """The adapted model of one episode."""

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities [n_query, n_way] (classification; regression predictors define ``predict``)."""


@dataclass(frozen=True, eq=False)
class FitData:
    """Everything ``fit`` may use: the base (meta-train) classes, the validation classes, the target protocol."""

    train: Any  # LabeledImages for classification
    val: Any | None
    target: Target
    seed: int
    unlabeled_target: torch.Tensor | None = None  # only for Tags(uses_unlabeled_target=True)
    identity: dict[str, Any] = field(default_factory=dict)  # dataset name, params, split: a cache key for artifacts

    def episodes(self, n_way: int, k_shot: int, n_query: int, split: str = "train",
                 seed_offset: int = 0) -> EpisodeSampler | TaskSampler:
        """Training or validation episodes from the same sampler the evaluation uses."""
        data = self.train if split == "train" else self.val
        if data is None:
            raise ValueError(f"this dataset has no {split!r} split")
        return make_sampler(data, n_way, k_shot, n_query, seed=self.seed, where=f"the {split} split",
                            stream=1 + seed_offset)

    def batches(self, batch_size: int, seed_offset: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless shuffled minibatches (x, y) over all base classes, for supervised pretraining."""
        data: LabeledImages = self.train
        batch_size = min(batch_size, len(data.labels))  # a tiny base set still yields batches
        rng = np.random.default_rng([self.seed, seed_offset, 0x7072])
        while True:
            order = torch.from_numpy(rng.permutation(len(data.labels)))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                rows = order[start:start + batch_size]
                yield data.as_float(rows), data.labels[rows]


class Algorithm(HasParams):
    """Base class for algorithm plugins. Subclasses set ``name``, ``kind`` and implement fit/adapt."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # one of FAMILIES
    tags: ClassVar[Tags] = Tags()
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}  # budget profile -> parameter overrides
    adapt_params: ClassVar[frozenset[str]] = frozenset()  # parameters used only by adapt(): variants share a fit
    citation: ClassVar[str] = ""

    def fit_key(self, target: Target) -> dict[str, Any]:
        """The parts of the target protocol that ``fit`` depends on; cells that agree share one fit."""
        return {"n_way": target.n_way, "k_shot": target.k_shot}

    def fit(self, data: FitData, ctx: "RunContext") -> "Algorithm":
        raise NotImplementedError

    def adapt(self, support: Support, ctx: "RunContext") -> Predictor:
        raise NotImplementedError

    def fit_info(self) -> dict[str, Any]:
        """Extra facts stored with each result (training curves, BatchNorm mode, ...)."""
        return dict(getattr(self, "fit_info_", {}) or {})

    @classmethod
    def code_version(cls) -> str:
        """Hash of the source of the package that defines the algorithm, all of its modules: behaviour also
        lives in base classes and shared helpers. Results and cached fits of changed code are told apart."""
        package = sys.modules.get(cls.__module__.split(".")[0])
        files = sorted(f for root in getattr(package, "__path__", []) for f in Path(root).rglob("*.py"))
        if files:
            return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:10]
        try:  # a plugin that is a single module
            source = inspect.getsource(inspect.getmodule(cls))
        except (OSError, TypeError):
            source = cls.__qualname__
        return hashlib.sha256(source.encode()).hexdigest()[:10]
