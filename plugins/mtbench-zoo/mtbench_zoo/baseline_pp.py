"""Baseline++ (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification", ICLR 2019,
arXiv:1904.04232): supervised pretraining with a cosine-similarity classifier, then for each episode a
new cosine classifier fitted on the support set with the encoder frozen.

The cosine classifier scores class c by ``scale * cos(z, w_c)``; the scale is learned here (initialised
at 10), where Chen et al. fixed it (2 for up to 200 classes, else 10). The per-episode head training has
two recipes shared with ``finetune``: ``adam`` (full-batch Adam, mtbench's default) and ``chen2019``
(SGD with momentum 0.9, lr 0.01, weight decay 1e-3, minibatches of 4, 100 epochs over the support set).
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import math
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, RunContext, Support, Target, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, nearest_centroid_accuracy
from .pretraining import PRETRAIN_BUDGETS

# Chen et al. 2019's fine-tuning recipe (their io_utils / meta_template: SGD, momentum 0.9, dampening 0.9,
# weight decay 1e-3, batch 4, 100 epochs); mtbench's SGD is Nesterov without dampening.
RECIPES = ("adam", "chen2019")
CHEN2019 = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 4, "epochs": 100}


class CosineClassifier(nn.Module):
    """``scale * cos(z, w_c)`` for every class c; ``learn_scale`` makes the scale a parameter."""

    def __init__(self, in_dim: int, n_classes: int, scale: float = 10.0, learn_scale: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T


def recipe_description(recipe: str, steps: int, lr: float, weight_decay: float) -> str:
    """What a head-training recipe did, for fit_info (every row shows its adaptation recipe)."""
    check_recipe(recipe)
    if recipe == "adam":
        return f"Adam lr {lr}, weight decay {weight_decay}, {steps} full-batch steps"
    c = CHEN2019
    return (f"Chen et al. 2019: SGD lr {c['lr']} momentum {c['momentum']} (Nesterov, no dampening), weight decay "
            f"{c['weight_decay']}, batch {c['batch_size']}, {c['epochs']} epochs over the support set")


def check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, not {recipe!r}")


def support_minibatches(n: int, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Row indices of shuffled minibatches, epoch after epoch (the last one of an epoch may be smaller)."""
    while True:
        order = torch.randperm(n).to(device)
        yield from order.split(batch_size)


def train_head(head: nn.Module, z: torch.Tensor, y: torch.Tensor, ctx: RunContext, recipe: str = "adam",
               steps: int = 100, lr: float = 0.01, weight_decay: float = 1e-3) -> nn.Module:
    """Fit a classifier head on frozen support features ``z`` with one of :data:`RECIPES`."""
    check_recipe(recipe)
    if recipe == "adam":
        fit_loop(lambda _: F.cross_entropy(head(z), y), itertools.repeat(None), head.parameters(), steps=steps,
                 ctx=ctx, lr=lr, weight_decay=weight_decay, progress=False)
        return head
    c = CHEN2019
    per_epoch = math.ceil(len(y) / c["batch_size"])
    fit_loop(lambda rows: F.cross_entropy(head(z[rows]), y[rows]), support_minibatches(len(y), c["batch_size"], z.device),
             head.parameters(), steps=c["epochs"] * per_epoch, ctx=ctx, lr=c["lr"], optimizer="sgd",
             momentum=c["momentum"], weight_decay=c["weight_decay"], progress=False)
    return head


def cosine_pretrained(data: FitData, ctx: RunContext, backbone: str, steps: int, batch_size: int, lr: float,
                      scale: float, validate_every: int = 500, val_episodes: int = 50) -> tuple[dict, dict]:
    """An encoder trained with a cosine classifier over every base class (cross-entropy, Adam, cosine lr).

    Returns the encoder's state dict and a record; cached through ``ctx.cached`` as tensors, so the cosine
    pretraining is done once per run."""
    key = {"kind": "pretrain-cosine", "data": data.identity, "seed": data.seed, "backbone": backbone,
           "steps": steps, "batch_size": batch_size, "lr": lr, "scale": scale, "validate_every": validate_every,
           "val_episodes": val_episodes, "code": PRETRAIN_CODE}

    def make() -> dict[str, Any]:
        torch.manual_seed(data.seed)
        fresh = ctx.build_backbone(backbone, data.train.shape)
        classifier = CosineClassifier(fresh.out_dim, data.train.n_classes, scale).to(ctx.device)

        def loss(batch) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(classifier(fresh(x.to(ctx.device))), y.to(ctx.device))

        validate = None
        if data.val is not None and validate_every:
            validate = lambda: {"val_accuracy": nearest_centroid_accuracy(fresh, data, ctx, val_episodes)}
        history = fit_loop(loss, data.batches(batch_size), [*fresh.parameters(), *classifier.parameters()],
                           steps=steps, ctx=ctx, lr=lr, cosine=True, validate=validate,
                           validate_every=validate_every,
                           description=f"pretrain {backbone} with a cosine classifier on all base classes")
        return {"encoder": fresh.state_dict(), "scale": classifier.scale.detach().clone(),
                "history": history.as_dict()}

    value, reused = ctx.cached(key, make)
    return value["encoder"], {"history": value["history"], "pretrain_reused": reused, "scale": float(value["scale"])}


# The cached cosine pretraining is reused until the code that produces it changes (not on any edit of this file).
PRETRAIN_CODE = hashlib.sha256("".join(inspect.getsource(f) for f in (CosineClassifier, cosine_pretrained))
                               .encode()).hexdigest()[:10]


class BaselinePP(FrozenEmbedding, Algorithm):
    name = "baseline-pp"
    kind = "transfer"
    citation = "Chen et al. 2019, arXiv:1904.04232 (Baseline++)"
    budgets = PRETRAIN_BUDGETS
    adapt_params = frozenset({"recipe", "head_steps", "head_lr", "head_weight_decay"})
    constraints = {"pretrain_steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "scale": "> 0", "recipe": RECIPES,
                   "head_steps": ">= 0", "head_lr": "> 0", "head_weight_decay": ">= 0"}

    def __init__(self, backbone: str = "conv4", pretrain_steps: int = 10_000, batch_size: int = 128,
                 lr: float = 1e-3, scale: float = 10.0, recipe: str = "adam", head_steps: int = 100,
                 head_lr: float = 0.01, head_weight_decay: float = 1e-3) -> None:
        self.backbone = backbone
        self.pretrain_steps = pretrain_steps
        self.batch_size = batch_size
        self.lr = lr
        self.scale = scale
        self.recipe = recipe
        self.head_steps = head_steps
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay

    def fit_key(self, target: Target) -> dict:
        return {}  # pretraining does not depend on the test protocol

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        self.scale_ = torch.tensor(float(self.scale), device=ctx.device)

    def fit(self, data: FitData, ctx: RunContext) -> "BaselinePP":
        check_recipe(self.recipe)
        self.init_fitted(data, ctx)
        state, info = cosine_pretrained(data, ctx, self.backbone, self.pretrain_steps, self.batch_size, self.lr,
                                        self.scale)
        self.encoder_.load_state_dict(state)
        self.encoder_.eval()
        self.scale_ = torch.tensor(info.pop("scale"), device=ctx.device)
        self.fit_info_ = {**info, "learned_scale": round(float(self.scale_), 4),
                          "deviations": ["the cosine classifier's scale is learned (init "
                                         f"{self.scale}); Chen et al. fixed it at 2 (<= 200 classes) or 10",
                                         "pretraining: Adam with a cosine learning-rate schedule, no augmentation"],
                          "batchnorm": "running statistics (frozen) during adaptation and test"}
        return self

    def fit_info(self) -> dict[str, Any]:
        return {**super().fit_info(), "adaptation": recipe_description(self.recipe, self.head_steps, self.head_lr,
                                                                        self.head_weight_decay)}

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """A new cosine classifier (the learned scale, fixed) trained on the support embeddings."""
        head = CosineClassifier(self.encoder_.out_dim, support.n_way, float(self.scale_), learn_scale=False)
        return HeadPredictor(train_head(head.to(ctx.device), support.x, support.y, ctx, self.recipe, self.head_steps,
                                        self.head_lr, self.head_weight_decay))


@hookimpl
def register_algorithms(register):
    register(BaselinePP)
