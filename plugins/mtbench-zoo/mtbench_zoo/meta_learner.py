"""The small base every gradient-based meta-learner extends (MAML and its family, Reptile, the LSTM meta-learner).

What they share lives here once: the paper settings by number of ways (explicit parameters win), the learner
network built by ``init_fitted`` (the fitted-state contract), the meta-training loop (meta-batches of training
episodes handed to :func:`mtbench.train.fit_loop` with the learner's own optimizer and schedule factories,
periodic meta-validation) and the facts recorded with every result: seconds per meta-iteration, peak memory,
the BatchNorm mode and, where there is one, the meta-batch strategy.

A subclass says only what differs: its paper table (:meth:`paper_settings`), the shape of its training
episodes, one meta-step (:meth:`meta_loss`: set ``.grad`` or return a loss with a graph), its optimizer and
schedule, and how it adapts. Variants that differ only in defaults (first-order MAML, the joint method) declare
``param_defaults`` instead of repeating the ``__init__``: the base gives them an ``__init__`` whose signature
carries those defaults, so ``get_params``, the CLI and suite files see them as ordinary parameters.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import resource
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F

from mtbench import Algorithm, FitData, LabeledImages, RunContext, Tags, fit_loop
from mtbench.train import OptimizerFactory, ScheduleFactory

from .functional import InnerLoop, MetaModel, Params

BN_MODES = {
    "transductive": "batch statistics, queries normalised together (transductive, as in the paper)",
    "support": "batch statistics of the support set (non-transductive)",
}


def _init_with_defaults(parent_init, overrides: dict[str, Any], added: dict[str, tuple[type, Any]]):
    """``parent_init`` with other default values and, after its parameters, ``added`` ones (name: (type,
    default)) that are stored as attributes: a real signature, so parameters stay introspectable and typed."""
    sig = inspect.signature(parent_init)
    unknown = set(overrides) - set(sig.parameters)
    if unknown:
        raise TypeError(f"param_defaults names unknown parameters {sorted(unknown)}")
    params = [p.replace(default=overrides[p.name]) if p.name in overrides else p for p in sig.parameters.values()]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=t)
               for n, (t, d) in added.items()]
    new_sig = sig.replace(parameters=params)

    @functools.wraps(parent_init)
    def __init__(self, *args, **kwargs):
        bound = new_sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name in added:
            setattr(self, name, bound.arguments.pop(name))
        parent_init(*bound.args, **bound.kwargs)
    __init__.__signature__ = new_sig
    __init__.__annotations__ = {**parent_init.__annotations__, **{n: t for n, (t, _) in added.items()}}
    return __init__


@dataclass(frozen=True)
class AdaptedPredictor:
    """The adapted functional parameters of one episode."""

    model: MetaModel
    params: Params
    inner: InnerLoop
    support_x: torch.Tensor
    regression: bool

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.inner.query_output(self.model, self.params, self.support_x, x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.query_output(self.model, self.params, self.support_x, x)


class GradientMetaLearner(Algorithm):
    """Hyperparameters every subclass has: backbone, meta_iterations, meta_batch, bn, validate_every,
    val_episodes (each subclass's ``__init__`` stores them with its own)."""

    kind = "meta"
    param_defaults: ClassVar[dict[str, Any]] = {}  # a variant's own defaults for its parent's parameters
    added_params: ClassVar[dict[str, tuple[type, Any]]] = {}  # a variant's extra parameters: name -> (type, default)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overrides, added = cls.__dict__.get("param_defaults", {}), cls.__dict__.get("added_params", {})
        if (overrides or added) and "__init__" not in cls.__dict__:
            parent = next(c.__dict__["__init__"] for c in cls.__mro__[1:] if "__init__" in c.__dict__)
            cls.__init__ = _init_with_defaults(parent, overrides, added)

    @property
    def tags(self) -> Tags:  # type: ignore[override]
        return Tags(transductive=self.bn == "transductive")

    # -- settings -----------------------------------------------------------------------------------
    def paper_settings(self, n_way: int) -> dict[str, Any]:
        """The paper's settings for this number of ways; every key is a parameter whose None means 'paper'."""
        raise NotImplementedError

    def settings(self, n_way: int) -> dict[str, Any]:
        """Explicit parameters win; unset ones take the paper's value for this number of ways."""
        paper = self.paper_settings(n_way)
        return {k: paper[k] if getattr(self, k) is None else getattr(self, k) for k in paper}

    def batchnorm_mode(self) -> str:
        if self.bn not in BN_MODES:
            raise ValueError(f"bn must be one of {', '.join(BN_MODES)}, not {self.bn!r}")
        return BN_MODES[self.bn]

    def loss_function(self):
        return F.mse_loss if self.regression_ else F.cross_entropy

    # -- fitted state ---------------------------------------------------------------------------------
    def init_fitted(self, data: FitData, ctx: RunContext, features: torch.nn.Module | None = None) -> None:
        """The learner network with fresh weights (or around given ``features``) and the resolved settings."""
        self.batchnorm_mode()  # a bad ``bn`` fails before any work
        self.regression_ = not isinstance(data.train, LabeledImages)
        in_shape = (1,) if self.regression_ else data.train.shape
        n_out = 1 if self.regression_ else data.target.n_way
        if features is None:
            features = ctx.build_backbone(self.backbone, in_shape)
        self.model_ = MetaModel(features, n_out).to(ctx.device)
        self.settings_ = self.settings(data.target.n_way)

    # -- meta-training ------------------------------------------------------------------------------
    def training_episodes(self, target) -> tuple[int, int]:
        """(shots, queries per class) of the training tasks."""
        raise NotImplementedError

    def meta_parameters(self) -> list[torch.Tensor]:
        return list(self.model_.parameters())

    def meta_optimizer(self) -> OptimizerFactory:
        raise NotImplementedError

    def meta_schedule(self) -> ScheduleFactory | None:
        return None

    def meta_loss(self, tasks: list) -> torch.Tensor:
        """One meta-iteration's loss on a meta-batch: with a graph to :meth:`meta_parameters`, or detached
        after setting their ``.grad``."""
        raise NotImplementedError

    def fit_facts(self) -> dict[str, Any]:
        """Algorithm-specific facts recorded with the result (strategy, inner optimiser, ...)."""
        return {}

    def meta_batches(self, data: FitData, ctx: RunContext) -> Iterator[list]:
        target = data.target
        shots, queries = self.training_episodes(target)
        sampler = data.episodes(target.n_way, shots, queries)
        counter = itertools.count()
        size = self.settings_["meta_batch"]
        return ([sampler[next(counter)].to(ctx.device) for _ in range(size)] for _ in itertools.count())

    def meta_train(self, data: FitData, ctx: RunContext, label: str = "") -> dict[str, Any]:
        """Run the meta-training loop; returns the facts every gradient-based meta-learner records."""
        target = data.target
        validate = None
        if data.val is not None and self.validate_every:
            key = "val_" + ("mse" if self.regression_ else "accuracy")
            validate = lambda: {key: self.validation_score(data, ctx)}
        start_peak_memory(ctx.device)
        history = fit_loop(self.meta_loss, self.meta_batches(data, ctx), self.meta_parameters(),
                           steps=self.meta_iterations, ctx=ctx, optimizer=self.meta_optimizer(),
                           schedule=self.meta_schedule(), validate=validate, validate_every=self.validate_every,
                           description=f"fit {self.name} {target.n_way}w{target.k_shot}s{label}")
        return {"history": history.as_dict(), "settings": self.settings_, **self.fit_facts(),
                "batchnorm": self.batchnorm_mode(),
                "seconds_per_meta_iteration": round(history.seconds / max(history.steps, 1), 4),
                **peak_memory(ctx.device)}

    def fit(self, data: FitData, ctx: RunContext) -> "GradientMetaLearner":
        self.init_fitted(data, ctx)
        self.fit_info_ = self.meta_train(data, ctx)
        return self

    def validation_score(self, data: FitData, ctx: RunContext) -> float:
        target = data.target
        sampler = data.episodes(target.n_way, target.k_shot, target.n_query, split="val", seed_offset=7)
        scores = []
        for i in range(self.val_episodes):
            ep = sampler[i].to(ctx.device)
            out = self.adapt(ep.support(), ctx)
            if self.regression_:
                scores.append(float(F.mse_loss(out.predict(ep.query_x), ep.query_y)))
            else:
                scores.append(float((out.predict_proba(ep.query_x).argmax(1) == ep.query_y).float().mean()))
        return sum(scores) / len(scores)


def start_peak_memory(device: torch.device) -> None:
    """Start measuring peak memory for :func:`peak_memory` (CUDA counts from here; RSS is per process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory of the training run, recorded with every result of a gradient-based meta-learner."""
    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_kind": "cuda max allocated"}
    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_memory_kind": "process peak RSS"}
