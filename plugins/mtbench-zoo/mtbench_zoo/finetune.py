"""Pretrain + fine-tune (the "Baseline" of Chen et al., "A Closer Look at Few-shot Classification",
ICLR 2019, arXiv:1904.04232).

Supervised pretraining on all base classes, then for each episode a new linear head fitted on the
support set with the encoder frozen; ``finetune_backbone=True`` also fine-tunes the whole encoder (a
copy: the fitted model is never changed), optionally with the L2-SP penalty ``l2sp * ||w - w_pre||^2``
toward the pretrained weights (Li, Grandvalet & Davoine, ICML 2018, arXiv:1802.01483).

The head is trained with ``recipe="adam"`` (full-batch Adam, the default) or ``recipe="chen2019"`` (Chen et
al.'s SGD with momentum, batch 4, 100 epochs over the support set). For regression (Finn et al.'s "pretrain
on all tasks" baseline) ``select_lr=True`` picks the fine-tuning step size for each number of steps on
validation tasks, and ``select_steps=True`` also the number of steps, as Finn et al. tuned their baselines.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, LabeledImages, RunContext, Support, Target, fit_loop, hookimpl

from ._common import FeaturePredictor, FrozenEmbedding, HeadPredictor
from .baseline_pp import RECIPES, check_recipe, recipe_description, train_head
from .pretraining import PRETRAIN_BUDGETS, fresh_networks, pretrained_encoder
from .regression_selection import select_regression_lr


def l2sp_penalty(model: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared L2 distance of ``model``'s parameters to ``reference`` (same names)."""
    return sum(((p - reference[n]) ** 2).sum() for n, p in model.named_parameters())


class Finetune(FrozenEmbedding, Algorithm):
    name = "finetune"
    kind = "transfer"
    citation = "Chen et al. 2019, arXiv:1904.04232 (Baseline); L2-SP: Li et al. 2018, arXiv:1802.01483"
    budgets = PRETRAIN_BUDGETS
    adapt_params = frozenset({"head_steps", "head_lr", "head_weight_decay", "finetune_backbone", "backbone_lr", "l2sp",
                              "recipe", "select_steps"})
    constraints = {"pretrain_steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "head_steps": ">= 0", "head_lr": "> 0",
                   "head_weight_decay": ">= 0", "backbone_lr": "> 0", "l2sp": ">= 0", "recipe": RECIPES,
                   "select_max_steps": ">= 1", "val_tasks": ">= 1"}

    def __init__(self, backbone: str = "conv4", pretrain_steps: int = 10_000, batch_size: int = 128,
                 lr: float = 1e-3, head_steps: int = 100, head_lr: float = 0.01, head_weight_decay: float = 1e-3,
                 finetune_backbone: bool = False, backbone_lr: float = 1e-3, l2sp: float = 0.0,
                 recipe: str = "adam", select_lr: bool = False,
                 lr_grid: tuple[float, ...] = (1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1), select_max_steps: int = 20,
                 val_tasks: int = 100, select_steps: bool = False) -> None:
        self.backbone = backbone
        self.pretrain_steps = pretrain_steps
        self.batch_size = batch_size
        self.lr = lr
        self.head_steps = head_steps
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay
        self.finetune_backbone = finetune_backbone
        self.backbone_lr = backbone_lr
        self.l2sp = l2sp
        self.recipe = recipe
        self.select_lr = select_lr
        self.lr_grid = lr_grid
        self.select_max_steps = select_max_steps
        self.val_tasks = val_tasks
        self.select_steps = select_steps

    def fit_key(self, target: Target) -> dict:
        # pretraining does not depend on the test protocol; selection on validation tasks uses its shots
        return {"k_shot": target.k_shot} if self.select_lr else {}

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.regression_ = not isinstance(data.train, LabeledImages)
        encoder, head = fresh_networks(data, ctx, self.backbone)
        self.encoder_ = encoder.eval()
        self.head_ = head if self.regression_ else None  # regression keeps its output layer

    def fit(self, data: FitData, ctx: RunContext) -> "Finetune":
        self.init_fitted(data, ctx)
        self.encoder_, info = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps, self.batch_size,
                                                 self.lr)
        head = info.pop("head")
        if self.regression_:
            self.head_ = head
        self.fit_info_ = {**info, "batchnorm": "running statistics (frozen) during adaptation and test"}
        if self.regression_ and self.select_lr:
            self.fit_info_["selection"] = select_regression_lr(nn.Sequential(self.encoder_, self.head_), data,
                                                               self.lr_grid, self.select_max_steps, self.val_tasks)
        return self

    def regression_step(self) -> tuple[float, int, str]:
        """The fine-tuning (lr, steps) of a regression episode and where they came from."""
        selection = self.fit_info_.get("selection") if self.select_lr else None
        if selection is None:
            return self.head_lr, self.head_steps, "set (head_lr, head_steps)"
        if self.select_steps:
            best = selection["best"]
            return best["lr"], best["steps"], "lr and steps selected on validation tasks"
        if str(self.head_steps) not in selection["lr_by_steps"]:  # validated only up to select_max_steps
            return (selection["lr_by_steps"][str(selection["max_steps"])], self.head_steps,
                    f"lr selected on validation tasks for {selection['max_steps']} steps (the most validated)")
        return selection["lr_by_steps"][str(self.head_steps)], self.head_steps, "lr selected on validation tasks"

    def fit_info(self) -> dict:
        info = super().fit_info()
        if getattr(self, "regression_", False):
            lr, steps, source = self.regression_step()
            return {**info, "adaptation": {"lr": lr, "steps": steps, "optimizer": "plain SGD", "source": source}}
        return {**info, "adaptation": "fine-tunes the whole encoder" if self.finetune_backbone else
                recipe_description(self.recipe, self.head_steps, self.head_lr, self.head_weight_decay)}

    def embeds_once(self) -> bool:
        """Only the head is trained on a frozen encoder (not when fine-tuning the backbone, nor regression)."""
        return not self.finetune_backbone and not self.regression_

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """A new linear head trained on the support embeddings (``support.x``)."""
        check_recipe(self.recipe)
        head = nn.Linear(self.encoder_.out_dim, support.n_way).to(ctx.device)
        return HeadPredictor(train_head(head, support.x, support.y, ctx, self.recipe, self.head_steps, self.head_lr,
                                        self.head_weight_decay))

    def adapt(self, support: Support, ctx: RunContext):
        if self.regression_:
            return self.adapt_regression(support, ctx)
        if not self.finetune_backbone:
            return super().adapt(support, ctx)
        head = nn.Linear(self.encoder_.out_dim, support.n_way).to(ctx.device)
        encoder = copy.deepcopy(self.encoder_).eval()  # BatchNorm keeps its pretrained statistics
        reference = {n: p.detach().clone() for n, p in self.encoder_.named_parameters()}

        def loss(_) -> torch.Tensor:
            value = F.cross_entropy(head(encoder(support.x)), support.y)
            return value + self.l2sp * l2sp_penalty(encoder, reference) if self.l2sp else value

        groups = [{"params": list(head.parameters()), "lr": self.head_lr},
                  {"params": list(encoder.parameters()), "lr": self.backbone_lr}]
        fit_loop(loss, itertools.repeat(None), groups, steps=self.head_steps, ctx=ctx, lr=self.head_lr,
                 progress=False)
        return FeaturePredictor(encoder, head)


    def adapt_regression(self, support: Support, ctx: RunContext) -> "Regressor":
        """Fine-tune the whole pretrained network with plain gradient steps (Finn et al.'s baseline)."""
        lr, steps, _ = self.regression_step()
        net = copy.deepcopy(nn.Sequential(self.encoder_, self.head_))
        reference = {n: p.detach().clone() for n, p in net.named_parameters()}

        def loss(_) -> torch.Tensor:
            value = F.mse_loss(net(support.x), support.y)
            return value + self.l2sp * l2sp_penalty(net, reference) if self.l2sp else value
        fit_loop(loss, itertools.repeat(None), net.parameters(), steps=steps, ctx=ctx, lr=lr,
                 optimizer="sgd", momentum=0.0, progress=False)
        return Regressor(net)


@dataclass(frozen=True)
class Regressor:
    net: nn.Module

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@hookimpl
def register_algorithms(register):
    register(Finetune)
