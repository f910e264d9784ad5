"""The algorithm contract: fit on base classes, adapt to a support set, predict the query set.

Rules (checked by :mod:`mtbench.testing`):

* ``__init__`` stores hyperparameters only; fitted state is set in ``fit`` and ends in ``_``.
* ``adapt`` must not mutate the fitted algorithm: it returns a new :class:`Predictor`.
* Devices come from the :class:`~mtbench.context.RunContext`; an algorithm never calls ``.cuda()``.

Fitted state (what the fit cache stores, as tensors and JSON, never pickles):

* ``init_fitted(data, ctx)`` creates every fitted attribute that holds tensors, with fresh values and no
  training; ``fit`` calls it first. A cached fit is ``init_fitted`` on a fresh instance, then
  ``load_fitted_state(tensors, meta)``. Without ``init_fitted`` an algorithm still runs, refitted every time.
* ``fitted_state()`` / ``load_fitted_state(tensors, meta)``: the defaults cover attributes ending in ``_``.

Embed-once evaluation (opt-in, for adaptation that only reads a frozen embedding of each image):

* ``embeds_once()`` returns True, ``embed_images(x, ctx)`` embeds a batch of images, and
  ``adapt_embedded(support, ctx)`` adapts to a support set whose ``x`` holds embeddings and returns an
  :class:`EmbeddedPredictor` (``predict_proba`` of query *embeddings*). The evaluation then embeds each test
  image once per fit, and each episode indexes into those embeddings.
* Where adaptation is a fixed function of the embeddings (no training, no randomness: prototypes, attention),
  ``adapts_embedded_in_batches()`` may return True and ``adapt_embedded_batch(support, ctx)`` adapt to many
  episodes at once (``support.x`` [E, S, D]); then the per-episode cost is a share of a few tensor operations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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


@runtime_checkable
class EmbeddedPredictor(Protocol):
    """The adapted model of one episode in embed-once evaluation: it reads embeddings, not images."""

    def predict_proba(self, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities [n_query, n_way] of query embeddings ``z`` (from ``embed_images``)."""


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

    # -- fitted state: what the fit cache stores (tensors + JSON, see mtbench.fitstate) ---------------
    def init_fitted(self, data: FitData, ctx: "RunContext") -> None:
        """Create every fitted attribute that holds tensors (names end in ``_``) with fresh values, no training.

        E.g. ``self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)``; tensors of the right
        shape on ``ctx.device``. ``fit`` calls it first and then trains; the fit cache calls it on a fresh
        instance and then :meth:`load_fitted_state`. The default raises NotImplementedError: such an
        algorithm still runs, but its fits are not cached on disk (it is fitted again on every run).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement init_fitted")

    def fitted_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The fitted state as (tensors by name, JSON-able meta).

        Default: every attribute ending in ``_`` (not starting with ``_``): an ``nn.Module`` as its
        ``state_dict`` (and which submodules are in training mode), a tensor, and dicts/lists/tuples of
        tensors and JSON values (``None``, bools, numbers, strings; tuples come back as lists). Anything
        else raises TypeError; override this and :meth:`load_fitted_state` only for such unusual state.
        """
        from .fitstate import default_fitted_state
        return default_fitted_state(self)

    def load_fitted_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`fitted_state` returned, after :meth:`init_fitted` on this instance.

        Default: modules built by ``init_fitted`` load their ``state_dict`` (strictly: a missing or extra
        entry is an error) and get their training modes back; other attributes are set from the stored
        values. Tensors arrive on the run's device.
        """
        from .fitstate import default_load_fitted_state
        default_load_fitted_state(self, tensors, meta)

    # -- embed-once evaluation (opt-in) ----------------------------------------------------------------
    def embeds_once(self) -> bool:
        """True when adaptation and prediction only read ``embed_images`` of each image (a frozen embedding).

        Then the evaluation embeds each test image once per fit and calls :meth:`adapt_embedded` on
        embeddings instead of :meth:`adapt` on images. The results must equal the per-episode path's:
        ``adapt(support).predict_proba(x)`` must be ``adapt_embedded(support with x = embed_images(support.x))
        .predict_proba(embed_images(x))`` (checked by the conformance kit). Default False. May depend on the
        hyperparameters (finetune: head only, not when it fine-tunes the backbone).
        """
        return False

    def embed_images(self, x: torch.Tensor, ctx: "RunContext") -> torch.Tensor:
        """Embeddings [n, ...] of images ``x`` (on ``ctx.device``) with the frozen encoder in eval mode; no grad.

        Only called when :meth:`embeds_once` is True. Each image's embedding must not depend on the
        other images of the batch (no batch statistics).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement embed_images")

    def adapts_embedded_in_batches(self) -> bool:
        """True when :meth:`adapt_embedded_batch` is implemented (embed-once evaluation then adapts to blocks of
        episodes at once). Only for adaptation that uses no randomness: the evaluation does not reseed per
        episode in a block. The results must equal :meth:`adapt_embedded` episode by episode (conformance kit).
        Default False."""
        return False

    def adapt_embedded_batch(self, support: Support, ctx: "RunContext") -> EmbeddedPredictor:
        """:meth:`adapt_embedded` for E episodes at once: ``support.x`` [E, S, ...] embeddings, ``support.y`` [S]
        labels (the same class-major order in every episode). The predictor's ``predict_proba`` takes query
        embeddings [E, Q, ...] and returns probabilities [E, Q, n_way]."""
        raise NotImplementedError(f"{type(self).__name__} does not implement adapt_embedded_batch")

    def adapt_embedded(self, support: Support, ctx: "RunContext") -> EmbeddedPredictor:
        """Adapt to a support set whose ``x`` holds embeddings (``support.y``, ``support.n_way`` as usual).

        Returns an :class:`EmbeddedPredictor`, whose ``predict_proba`` takes query embeddings. Like
        :meth:`adapt` it must not mutate the fitted algorithm.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement adapt_embedded")

    @classmethod
    def code_version(cls) -> str:
        """Hash of the source of the module that defines the algorithm and of the modules of its package it
        imports (behaviour also lives in base classes and shared helpers): results and cached fits of
        changed code are told apart, and an edit of a sibling algorithm changes nothing here."""
        from .versions import package_version
        return package_version(cls.__module__)
