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
import time
from typing import Any

import torch

from mtbench import FitData, LabeledImages, RunContext, Support, hookimpl
from mtbench.train import OptimizerFactory

from .functional import (InnerLoop, Params, Strategy, graph_megabytes, inner_loop, l2_distance, meta_gradient,
                         resolve_strategy, task_query_loss)
from .meta_learner import AdaptedPredictor, GradientMetaLearner
from .pretraining import PRETRAIN_BUDGETS, pretrained_encoder


def paper_settings(n_way: int) -> dict[str, Any]:
    """Finn et al. 2017 Omniglot settings by number of ways."""
    if n_way >= 20:
        return {"inner_lr": 0.1, "inner_steps": 5, "test_inner_steps": 5, "meta_batch": 16}
    return {"inner_lr": 0.4, "inner_steps": 1, "test_inner_steps": 3, "meta_batch": 32}


class MAML(GradientMetaLearner):
    name = "maml"
    citation = "Finn et al. 2017, arXiv:1703.03400"
    adapt_params = frozenset({"test_inner_steps"})
    # quick fits the fewshot suite's ten minutes poorly: use it for smoke checks; standard is ~20 min on 2 cores.
    budgets = {"quick": {"meta_iterations": 300}, "standard": {"meta_iterations": 3000},
               "paper": {"meta_iterations": 60_000}}
    constraints = {"meta_iterations": ">= 1", "meta_batch": ">= 1", "inner_lr": "> 0", "inner_steps": ">= 1",
                   "test_inner_steps": ">= 0", "meta_lr": "> 0", "train_query": ">= 1",
                   "bn": ("transductive", "support"), "strategy": ("auto", "loop", "grouped", "vmap"),
                   "validate_every": ">= 0", "val_episodes": ">= 1", "pretrain_steps": ">= 0", "l2sp": ">= 0",
                   "inner_l2sp": ">= 0", "chunk_size": ">= 1", "max_memory_mb": "> 0"}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 60_000, meta_batch: int | None = None,
                 inner_lr: float | None = None, inner_steps: int | None = None, test_inner_steps: int | None = None,
                 meta_lr: float = 1e-3, train_query: int | None = None, first_order: bool = False,
                 bn: str = "transductive", strategy: str = "auto", validate_every: int = 100,
                 val_episodes: int = 100, pretrain_steps: int = 0, l2sp: float = 0.0, inner_l2sp: float = 0.0,
                 chunk_size: int | None = None, max_memory_mb: float | None = None) -> None:
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
        self.chunk_size = chunk_size
        self.max_memory_mb = max_memory_mb

    def paper_settings(self, n_way: int) -> dict[str, Any]:
        return paper_settings(n_way)

    def adapted_names(self, params: Params) -> tuple[str, ...] | None:
        """Which parameters the inner loop changes (all of them for MAML)."""
        return None

    def inner(self, lr: Any, steps: int) -> InnerLoop:
        return InnerLoop(self.loss_function(), steps, lr, self.adapted_names(dict(self.model_.named_parameters())),
                         self.inner_l2sp, self.anchor_ or None, self.bn == "support")

    def lr_parameters(self) -> Params | None:
        """Meta-learned inner step sizes (Meta-SGD); None for a fixed scalar step size."""
        return None

    # -- fitted state and fit -------------------------------------------------------------------------
    def init_fitted(self, data: FitData, ctx: RunContext, features: torch.nn.Module | None = None) -> None:
        """The network; with pretraining, the L2-SP anchor too (a copy of the starting features)."""
        super().init_fitted(data, ctx, features)
        self.anchor_: Params = {}
        if self.pretrain_steps:
            self.anchor_ = {f"features.{n}": p.detach().clone() for n, p in self.model_.features.named_parameters()}
        self.strategy_ = self.resolve_strategy(ctx.device).as_dict()

    def resolve_strategy(self, device: torch.device, task_mb: float | None = None) -> Strategy:
        return resolve_strategy(self.strategy, device, self.model_, chunk_size=self.chunk_size,
                                max_memory_mb=self.max_memory_mb, task_mb=task_mb)

    def size_chunks(self, tasks: list) -> None:
        """With ``max_memory_mb``, grouped's chunk is sized from one task's measured graph (first meta-batch)."""
        if self.strategy_["name"] != "grouped" or self.chunk_size or not self.max_memory_mb or "task_mb" in self.strategy_:
            return
        s = self.settings_
        params = dict(self.model_.named_parameters())
        inner = self.inner(self.lr_parameters() or s["inner_lr"], s["inner_steps"])
        task_mb = graph_megabytes(lambda: task_query_loss(self.model_, params, tasks[0], inner, self.first_order))
        self.strategy_ = {**self.resolve_strategy(tasks[0].support_x.device, task_mb).as_dict(),
                          "task_mb": round(task_mb, 2)}

    def fit(self, data: FitData, ctx: RunContext) -> "MAML":
        features, pretrain = None, None
        if self.pretrain_steps:
            features, pretrain = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps)
            features, head = copy.deepcopy(features), pretrain.pop("head")
        self.init_fitted(data, ctx, features)
        if pretrain is not None and self.regression_:  # same output space: the pretrained output layer is kept too
            self.model_.head.load_state_dict(head.state_dict())
        info = self.meta_train(data, ctx, f" ({self.strategy_['name']})")
        self.fit_info_ = {**info, "pretrain": pretrain, **self.joint_record(pretrain, info)}
        return self

    def joint_record(self, pretrain: dict | None, info: dict) -> dict:
        """Stated on the joint method's rows: the whole training cost (the source network's pretraining
        counts, even when its weights came from the cache), where lambda came from, what the penalty covers."""
        if pretrain is None:
            return {}
        pretrain_s, meta_s = pretrain["history"]["seconds"], info["history"]["seconds"]
        cost = {"pretrain_s": pretrain_s, "meta_s": meta_s, "total_s": round(pretrain_s + meta_s, 3),
                "pretrain_steps": pretrain["history"]["steps"], "pretrain_reused": pretrain["pretrain_reused"]}
        return {"training_cost": cost,
                "l2sp": {"lambda": self.l2sp_weight(), "inner_lambda": self.inner_l2sp, **self.lambda_source(),
                         "penalised": "the pretrained features only (toward theta_source)",
                         "head_penalty": "none: the head is not penalised (Li et al.'s beta/2 ||w_new||^2 is absent)"}}

    def l2sp_weight(self) -> float:
        """lambda of the meta-objective's L2-SP term: the ``l2sp`` parameter (maml-l2sp may select it)."""
        return self.l2sp

    def lambda_source(self) -> dict[str, Any]:
        return {"lambda_selected_on_validation": False, "lambda_source": "the l2sp parameter, set by hand"}

    def training_episodes(self, target) -> tuple[int, int]:
        return target.k_shot, self.train_query or (target.n_query if self.regression_ else target.k_shot)

    def meta_parameters(self) -> list[torch.Tensor]:
        return [*self.model_.parameters(), *(self.lr_parameters() or {}).values()]

    def meta_optimizer(self) -> OptimizerFactory:
        return lambda groups: torch.optim.Adam(groups, lr=self.meta_lr)

    def fit_facts(self) -> dict[str, Any]:
        return {"strategy": self.strategy_["name"], "strategy_detail": self.strategy_, "first_order": self.first_order}

    def meta_loss(self, tasks: list) -> torch.Tensor:
        self.size_chunks(tasks)
        s = self.settings_
        params = dict(self.model_.named_parameters())
        lr_params = self.lr_parameters()
        inner = self.inner(s["inner_lr"], s["inner_steps"])
        strategy = Strategy(self.strategy_["name"], self.strategy_["chunk_size"],
                            workers=self.strategy_.get("workers", 1))
        value, grads = meta_gradient(self.model_, params, tasks, inner, self.first_order, strategy, lr_params)
        weight = self.l2sp_weight()
        penalty = weight * l2_distance(params, self.anchor_) if weight and self.anchor_ else None
        for name, p in params.items():
            p.grad = grads["params"][name]
        for name, p in (lr_params or {}).items():
            p.grad = grads["lr"][name]
        if penalty is not None:
            penalty.backward()
        return value

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


class FirstOrderMAML(MAML):
    """First-order MAML: the meta-gradient ignores second derivatives through the inner loop."""

    name = "maml-fo"
    citation = "Finn et al. 2017, arXiv:1703.03400 (first-order approximation)"
    param_defaults = {"first_order": True}
    # About 2.5x cheaper per meta-iteration than second order on the CPU: the same wall-clock budget.
    budgets = {"quick": {"meta_iterations": 600}, "standard": {"meta_iterations": 6000},
               "paper": {"meta_iterations": 60_000}}


class MAMLL2SP(MAML):
    """Joint transfer + meta: MAML from pretrained weights, regularised toward them (L2-SP).

    ``select_l2sp`` (default on): lambda is chosen on validation episodes before meta-training. Each
    candidate of :data:`L2SP_GRID` is meta-trained from the same pretrained start for a tenth of the
    meta-iterations, each scored on the same validation episodes; the best is then meta-trained in full.
    The candidates' scores and the selection's seconds are recorded, and the seconds count in the training
    cost. ``select_l2sp=False``, or base data without a validation split, uses ``l2sp`` as given.
    """

    name = "maml-l2sp"
    kind = "joint"
    citation = "MAML (Finn et al. 2017) + L2-SP (Li et al. 2018, arXiv:1802.01483) from a pretrained start"
    param_defaults = {"pretrain_steps": 10_000, "l2sp": 1e-3}
    added_params = {"select_l2sp": (bool, True)}
    budgets = {b: {**MAML.budgets[b], **PRETRAIN_BUDGETS[b]} for b in MAML.budgets}
    L2SP_GRID = (1e-4, 1e-3, 1e-2)  # around Li et al.'s alpha = 0.01 and this package's earlier hand-set 1e-3
    SELECT_FRACTION = 10  # each candidate gets meta_iterations // 10 meta-iterations

    def fit(self, data: FitData, ctx: RunContext) -> "MAMLL2SP":
        self.l2sp_selection_ = None
        if self.select_l2sp and self.pretrain_steps and data.val is not None:
            self.l2sp_selection_ = self.select_lambda(data, ctx)
        super().fit(data, ctx)
        selection = self.l2sp_selection_
        if selection:  # the trial fits count in the training cost (mtbench.execute.training_cost)
            self.fit_info_["selection"] = {"parameter": "l2sp", **selection}
            scores = ", ".join(f"{c:g}: {v:.4g}" for c, v in zip(selection["candidates"], selection["scores"]))
            self.fit_info_["deviations"] = [  # shown on the row's notes
                *self.fit_info_.get("deviations", []),
                f"lambda = {selection['chosen']:g}, selected on {selection['val_episodes']} validation episodes "
                f"({selection['metric']} after {selection['meta_iterations_each']} meta-iterations each: {scores})"]
        return self

    def select_lambda(self, data: FitData, ctx: RunContext) -> dict[str, Any]:
        """Meta-train each candidate lambda briefly, score it on validation episodes, keep the best."""
        iterations = max(1, self.meta_iterations // self.SELECT_FRACTION)
        regression = not isinstance(data.train, LabeledImages)
        devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
        start, scores = time.perf_counter(), {}
        for candidate in self.L2SP_GRID:
            trial = type(self)(**{**self.get_params(), "l2sp": candidate, "select_l2sp": False,
                                  "meta_iterations": iterations, "validate_every": 0})
            with torch.random.fork_rng(devices=devices):  # the full meta-training starts from the same RNG state
                torch.manual_seed(data.seed)
                trial.fit(data, ctx)
                scores[candidate] = trial.validation_score(data, ctx)
        chosen = (min if regression else max)(scores, key=lambda c: (scores[c], -self.L2SP_GRID.index(c)))
        return {"candidates": list(self.L2SP_GRID), "chosen": chosen, "meta_iterations_each": iterations,
                "val_episodes": self.val_episodes, "metric": "val_mse" if regression else "val_accuracy",
                "scores": [round(scores[c], 5) for c in self.L2SP_GRID],
                "seconds": round(time.perf_counter() - start, 3)}

    def l2sp_weight(self) -> float:
        selection = getattr(self, "l2sp_selection_", None)
        return selection["chosen"] if selection else self.l2sp

    def lambda_source(self) -> dict[str, Any]:
        selection = getattr(self, "l2sp_selection_", None)
        if not selection:
            source = super().lambda_source()
            return {**source, "lambda_source": source["lambda_source"] + " (no validation data to select it on)"} \
                if self.select_l2sp and self.pretrain_steps else source
        return {"lambda_selected_on_validation": True, "lambda_selection": selection,
                "lambda_source": f"selected on validation from {selection['candidates']}"}

    def joint_record(self, pretrain: dict | None, info: dict) -> dict:
        record = super().joint_record(pretrain, info)
        selection = getattr(self, "l2sp_selection_", None)
        if selection and record:
            cost = record["training_cost"]
            cost.update(selection_s=selection["seconds"], total_s=round(cost["total_s"] + selection["seconds"], 3))
        return record


@hookimpl
def register_algorithms(register):
    register(MAML)
    register(FirstOrderMAML)
    register(MAMLL2SP)
