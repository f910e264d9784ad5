"""MAML (Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017, arXiv:1703.03400), first-order MAML, and the joint transfer + meta objective.

The joint method (``maml-l2sp``) is this algorithm with three options, not a copy of it:
(a) ``pretrain_steps > 0`` starts meta-learning from weights pretrained on all base classes;
(b) ``l2sp = lambda`` adds lambda * ||theta - theta_source||^2 to the meta-objective (L2-SP, Li et al. 2018);
(c) ``inner_l2sp`` applies the same penalty inside the inner loop, also at adaptation time.

Paper defaults (Finn et al. 2017, App. A.1): Omniglot 5-way: inner lr 0.4, 1 inner step in training, 3 at
test, meta-batch 32; 20-way: inner lr 0.1, 5 steps, meta-batch 16; Adam 1e-3; BatchNorm with the
statistics of the current batch, also at test (transductive). ``bn="support"`` normalises queries with
the support set's statistics instead (non-transductive).
"""
from __future__ import annotations

import copy
import itertools
import resource
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mtbench import Algorithm, FitData, LabeledImages, RunContext, Support, Tags, Target, fit_loop, hookimpl

from .functional import InnerLoop, MetaModel, Params, inner_loop, l2_distance, meta_objective, resolve_strategy
from .pretraining import PRETRAIN_BUDGETS, pretrained_encoder


def paper_settings(n_way: int) -> dict[str, Any]:
    """Finn et al. 2017 Omniglot settings by number of ways."""
    if n_way >= 20:
        return {"inner_lr": 0.1, "inner_steps": 5, "test_inner_steps": 5, "meta_batch": 16}
    return {"inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3, "meta_batch": 32}


@dataclass(frozen=True)
class AdaptedPredictor:
    """The adapted parameters of one episode."""

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


class MAML(Algorithm):
    name = "maml"
    kind = "meta"
    citation = "Finn et al. 2017, arXiv:1703.03400"
    adapt_params = frozenset({"test_inner_steps"})
    # quick fits the fewshot suite's ten minutes poorly: use it for smoke checks; standard is ~20 min on 2 cores.
    budgets = {"quick": {"meta_iterations": 300}, "standard": {"meta_iterations": 3000},
               "paper": {"meta_iterations": 60_000}}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 60_000, meta_batch: int | None = None,
                 inner_lr: float | None = None, inner_steps: int | None = None, test_inner_steps: int | None = None,
                 meta_lr: float = 1e-3, train_query: int | None = None, first_order: bool = False,
                 bn: str = "transductive", strategy: str = "auto", validate_every: int = 100,
                 val_episodes: int = 100, pretrain_steps: int = 0, l2sp: float = 0.0, inner_l2sp: float = 0.0) -> None:
        self.backbone = backbone
        self.meta_iterations = meta_iterations
        self.meta_batch = meta_batch
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.meta_lr = meta_lr
        self.train_query = train_query
        self.first_order = first_order
        self.bn = bn
        self.strategy = strategy
        self.validate_every = validate_every
        self.val_episodes = val_episodes
        self.pretrain_steps = pretrain_steps
        self.l2sp = l2sp
        self.inner_l2sp = inner_l2sp

    @property
    def tags(self) -> Tags:  # type: ignore[override]
        return Tags(transductive=self.bn == "transductive")

    # -- settings -----------------------------------------------------------------------------------
    # The paper's settings by number of ways; subclasses with another paper (Reptile) replace the table.
    paper_settings = staticmethod(paper_settings)

    def settings(self, n_way: int) -> dict[str, Any]:
        """Explicit parameters win; unset ones take the paper's value for this number of ways."""
        paper = self.paper_settings(n_way)
        return {k: paper[k] if getattr(self, k) is None else getattr(self, k) for k in paper}

    def adapted_names(self, params: Params) -> tuple[str, ...] | None:
        """Which parameters the inner loop changes (all of them for MAML)."""
        return None

    def inner(self, lr: Any, steps: int) -> InnerLoop:
        if self.bn not in ("transductive", "support"):
            raise ValueError(f"bn must be 'transductive' or 'support', not {self.bn!r}")
        loss = F.mse_loss if self.regression_ else F.cross_entropy
        return InnerLoop(loss, steps, lr, self.adapted_names(dict(self.model_.named_parameters())),
                         self.inner_l2sp, self.anchor_ or None, self.bn == "support")

    def lr_parameters(self) -> Params | None:
        """Meta-learned inner step sizes (Meta-SGD); None for a fixed scalar step size."""
        return None

    # -- fit ----------------------------------------------------------------------------------------
    def build(self, data: FitData, ctx: RunContext) -> None:
        self.regression_ = not isinstance(data.train, LabeledImages)
        in_shape = (1,) if self.regression_ else data.train.shape
        n_out = 1 if self.regression_ else data.target.n_way
        self.anchor_: Params = {}
        if self.pretrain_steps:
            features, info = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps)
            head = info.pop("head")
            self.pretrain_info_ = info
            self.anchor_ = {f"features.{n}": p.detach().clone() for n, p in features.named_parameters()}
            self.model_ = MetaModel(copy.deepcopy(features), n_out).to(ctx.device)
            if self.regression_:  # same output space: the pretrained output layer is kept too
                self.model_.head.load_state_dict(head.state_dict())
        else:
            self.model_ = MetaModel(ctx.build_backbone(self.backbone, in_shape), n_out).to(ctx.device)

    def fit(self, data: FitData, ctx: RunContext) -> "MAML":
        self.build(data, ctx)
        target = data.target
        s = self.settings(target.n_way)
        self.settings_ = s
        params = dict(self.model_.named_parameters())
        lr_params = self.lr_parameters()
        strategy = resolve_strategy(self.strategy, ctx.device, self.model_)
        inner = self.inner(s["inner_lr"], s["inner_steps"])
        query = self.train_query or (target.n_query if self.regression_ else target.k_shot)
        sampler = data.episodes(target.n_way, target.k_shot, query)
        counter = itertools.count()
        batches = ([sampler[next(counter)].to(ctx.device) for _ in range(s["meta_batch"])] for _ in itertools.count())

        def loss(tasks) -> torch.Tensor:
            value, grads = meta_objective(self.model_, params, tasks, inner, self.first_order, strategy, lr_params)
            penalty = self.l2sp * l2_distance(params, self.anchor_) if self.l2sp and self.anchor_ else None
            if grads is None:
                return value + penalty if penalty is not None else value
            for name, p in params.items():
                p.grad = grads["params"][name]
            for name, p in (lr_params or {}).items():
                p.grad = grads["lr"][name]
            if penalty is not None:
                penalty.backward()
            return value

        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_" + ("mse" if self.regression_ else "accuracy"): self.validation_score(data, ctx)}
        trainable = [*params.values(), *(lr_params or {}).values()]
        start_peak_memory(ctx.device)
        history = fit_loop(loss, batches, trainable, steps=self.meta_iterations, ctx=ctx, lr=self.meta_lr,
                           validate=validate, validate_every=self.validate_every,
                           description=f"fit {self.name} {target.n_way}w{target.k_shot}s ({strategy})")
        self.fit_info_ = {
            "history": history.as_dict(), "settings": s, "strategy": strategy, "first_order": self.first_order,
            "batchnorm": ("batch statistics, queries normalised together (transductive, as in the paper)"
                          if self.bn == "transductive" else "batch statistics of the support set (non-transductive)"),
            "seconds_per_meta_iteration": round(history.seconds / max(history.steps, 1), 4),
            **peak_memory(ctx.device),
            "pretrain": getattr(self, "pretrain_info_", None),
        }
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

    # -- adapt --------------------------------------------------------------------------------------
    def adapt(self, support: Support, ctx: RunContext) -> AdaptedPredictor:
        s = self.settings_
        steps = s["test_inner_steps"] if self.test_inner_steps is None else self.test_inner_steps
        lr_params = self.lr_parameters()
        lr = {n: p.detach() for n, p in lr_params.items()} if lr_params else s["inner_lr"]
        inner = self.inner(lr, steps)
        start = {n: p.detach().requires_grad_() for n, p in self.model_.named_parameters()}
        with torch.enable_grad():
            fast = inner_loop(self.model_, start, support.x, support.y, inner, create_graph=False)
        return AdaptedPredictor(self.model_, {n: p.detach() for n, p in fast.items()}, inner, support.x,
                                self.regression_)


def start_peak_memory(device: torch.device) -> None:
    """Start measuring peak memory for :func:`peak_memory` (CUDA counts from here; RSS is per process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """Peak memory of the training run, recorded with every result of the MAML family."""
    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_kind": "cuda max allocated"}
    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_memory_kind": "process peak RSS"}


class FirstOrderMAML(MAML):
    """First-order MAML: the meta-gradient ignores second derivatives through the inner loop."""

    name = "maml-fo"
    citation = "Finn et al. 2017, arXiv:1703.03400 (first-order approximation)"
    # About 2.5x cheaper per meta-iteration than second order on the CPU: the same wall-clock budget.
    budgets = {"quick": {"meta_iterations": 600}, "standard": {"meta_iterations": 6000},
               "paper": {"meta_iterations": 60_000}}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 60_000, meta_batch: int | None = None,
                 inner_lr: float | None = None, inner_steps: int | None = None, test_inner_steps: int | None = None,
                 meta_lr: float = 1e-3, train_query: int | None = None, first_order: bool = True,
                 bn: str = "transductive", strategy: str = "auto", validate_every: int = 100,
                 val_episodes: int = 100, pretrain_steps: int = 0, l2sp: float = 0.0, inner_l2sp: float = 0.0) -> None:
        super().__init__(backbone, meta_iterations, meta_batch, inner_lr, inner_steps, test_inner_steps, meta_lr,
                         train_query, first_order, bn, strategy, validate_every, val_episodes, pretrain_steps,
                         l2sp, inner_l2sp)


class MAMLL2SP(MAML):
    """Joint transfer + meta: MAML from pretrained weights, regularised toward them (L2-SP)."""

    name = "maml-l2sp"
    kind = "joint"
    citation = "MAML (Finn et al. 2017) + L2-SP (Li et al. 2018, arXiv:1802.01483) from a pretrained start"
    budgets = {b: {**MAML.budgets[b], **PRETRAIN_BUDGETS[b]} for b in MAML.budgets}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 60_000, meta_batch: int | None = None,
                 inner_lr: float | None = None, inner_steps: int | None = None, test_inner_steps: int | None = None,
                 meta_lr: float = 1e-3, train_query: int | None = None, first_order: bool = False,
                 bn: str = "transductive", strategy: str = "auto", validate_every: int = 100,
                 val_episodes: int = 100, pretrain_steps: int = 10_000, l2sp: float = 1e-3,
                 inner_l2sp: float = 0.0) -> None:
        super().__init__(backbone, meta_iterations, meta_batch, inner_lr, inner_steps, test_inner_steps, meta_lr,
                         train_query, first_order, bn, strategy, validate_every, val_episodes, pretrain_steps,
                         l2sp, inner_l2sp)


@hookimpl
def register_algorithms(register):
    register(MAML)
    register(FirstOrderMAML)
    register(MAMLL2SP)
