"""DANN, domain-adversarial training (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR
2016, arXiv:1505.07818): supervised training on the base classes plus a domain classifier on the features,
connected through a gradient-reversal layer, so that the encoder learns features the domain classifier
cannot tell apart between the base (source) images and unlabeled images of the target domain.

The reversal weight follows the paper's schedule lambda_p = 2 / (1 + exp(-10 p)) - 1, p the fraction of
training done, times ``adversary_weight`` (0 gives the ablation: the same training, domain classifier
included, with no gradient reaching the encoder from it). Each episode then gets a new head on the frozen
features, as in ``finetune``.

The unlabeled target images are the evaluated split's images, labels withheld (``Tags(uses_unlabeled_target
=True)``: the runner hands them over in ``FitData.unlabeled_target``). What was seen is recorded in
``fit_info["unlabeled_target"]`` (count, shape, SHA-256 of the bytes, images drawn).
"""
from __future__ import annotations

import hashlib
import itertools
import math
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, MtbenchError, RunContext, Support, Tags, Target, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, nearest_centroid_accuracy
from .pretraining import PRETRAIN_BUDGETS
from .baseline_pp import RECIPES, check_recipe, recipe_description, train_head


def reversal_weight(p: float) -> float:
    """Ganin et al. 2016's schedule lambda_p = 2 / (1 + exp(-10 p)) - 1, from 0 at p = 0 toward 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """The identity forward; the gradient multiplied by ``-weight`` backward (the gradient-reversal layer)."""
    return _ReverseGradient.apply(x, weight)


def describe_images(images: torch.Tensor) -> dict[str, Any]:
    """Count, shape and a digest of a tensor of images: which unlabeled images a fit saw."""
    raw = images.detach().cpu().contiguous()
    return {"count": len(raw), "shape": list(raw.shape[1:]), "dtype": str(raw.dtype),
            "sha256": hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]}


def target_batches(images: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled minibatches of unlabeled target images, scaled to [0, 1] like the base images."""
    rng = np.random.default_rng([seed, 0x64616E6E])
    batch_size = min(batch_size, len(images))
    while True:
        order = torch.from_numpy(rng.permutation(len(images)))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            x = images[order[start:start + batch_size]]
            yield x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class DANN(FrozenEmbedding, Algorithm):
    name = "dann"
    kind = "transfer"
    tags = Tags(uses_unlabeled_target=True)
    citation = "Ganin et al. 2016, arXiv:1505.07818"
    # The labeled base images of the shared pretraining budget (finetune, linear-probe: PRETRAIN_BUDGETS, batches
    # of 128), so the adversary is the only difference; each step also draws 128 unlabeled target images.
    budgets = {profile: {"steps": value["pretrain_steps"]} for profile, value in PRETRAIN_BUDGETS.items()}
    adapt_params = frozenset({"recipe", "head_steps", "head_lr", "head_weight_decay"})
    constraints = {"steps": ">= 1", "batch_size": ">= 1", "lr": "> 0", "adversary_weight": ">= 0",
                   "domain_hidden": ">= 1", "recipe": RECIPES, "head_steps": ">= 0", "head_lr": "> 0",
                   "head_weight_decay": ">= 0", "validate_every": ">= 0", "val_episodes": ">= 1"}

    def __init__(self, backbone: str = "conv4", steps: int = 10_000, batch_size: int = 128, lr: float = 1e-3,
                 adversary_weight: float = 1.0, domain_hidden: int = 100, recipe: str = "adam",
                 head_steps: int = 100, head_lr: float = 0.01, head_weight_decay: float = 1e-3,
                 validate_every: int = 250, val_episodes: int = 50) -> None:
        self.backbone = backbone
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.adversary_weight = adversary_weight
        self.domain_hidden = domain_hidden
        self.recipe = recipe
        self.head_steps = head_steps
        self.head_lr = head_lr
        self.head_weight_decay = head_weight_decay
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def fit_key(self, target: Target) -> dict:
        return {}  # the test protocol plays no part; the unlabeled target images are in the runner's key

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        self.classifier_ = nn.Linear(self.encoder_.out_dim, data.train.n_classes).to(ctx.device)
        self.domain_ = nn.Sequential(nn.Linear(self.encoder_.out_dim, self.domain_hidden), nn.ReLU(),
                                     nn.Linear(self.domain_hidden, 1)).to(ctx.device)

    def fit(self, data: FitData, ctx: RunContext) -> "DANN":
        check_recipe(self.recipe)
        if data.unlabeled_target is None or not len(data.unlabeled_target):
            raise MtbenchError("dann needs unlabeled target images (FitData.unlabeled_target); "
                               "the runner passes them for algorithms tagged uses_unlabeled_target")
        torch.manual_seed(data.seed)
        self.init_fitted(data, ctx)
        target = data.unlabeled_target
        if tuple(target.shape[1:]) != tuple(data.train.shape):
            raise MtbenchError(f"dann: target images are {tuple(target.shape[1:])}, base images "
                               f"{tuple(data.train.shape)}; both domains must share one input shape")
        batches = zip(itertools.count(), data.batches(self.batch_size), target_batches(target, self.batch_size,
                                                                                       data.seed))
        domain_log: list[tuple[int, float, float]] = []

        def loss(batch) -> torch.Tensor:
            step, (xs, ys), xt = batch
            weight = self.adversary_weight * reversal_weight(step / self.steps)
            z = self.encoder_(torch.cat([xs, xt]).to(ctx.device))  # one BatchNorm batch over both domains
            zs = z[: len(xs)]
            label_loss = F.cross_entropy(self.classifier_(zs), ys.to(ctx.device))
            domain_logit = self.domain_(reverse_gradient(z, weight)).squeeze(1)
            is_target = torch.cat([torch.zeros(len(xs)), torch.ones(len(xt))]).to(ctx.device)
            domain_loss = F.binary_cross_entropy_with_logits(domain_logit, is_target)
            if step % 50 == 0 or step == self.steps - 1:
                accuracy = float(((domain_logit > 0).float() == is_target).float().mean())
                domain_log.append((step + 1, round(weight, 4), round(accuracy, 4)))
            return label_loss + domain_loss

        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_accuracy": nearest_centroid_accuracy(self.encoder_, data, ctx,
                                                                          self.val_episodes)}
        params = [*self.encoder_.parameters(), *self.classifier_.parameters(), *self.domain_.parameters()]
        history = fit_loop(loss, batches, params, steps=self.steps, ctx=ctx, lr=self.lr, cosine=True,
                           validate=validate, validate_every=self.validate_every,
                           description=f"fit dann (adversary weight {self.adversary_weight})")
        self.encoder_.eval()
        self.fit_info_ = {
            "history": history.as_dict(),
            "unlabeled_target": {**describe_images(target), "used": True,
                                 "split": "the evaluated (test) split's images, labels withheld",
                                 "images_drawn": self.steps * min(self.batch_size, len(target))},
            "adversary_weight": self.adversary_weight,
            "reversal_schedule": "lambda_p = adversary_weight * (2 / (1 + exp(-10 p)) - 1), p = step / steps",
            "domain_classifier": f"Linear({self.encoder_.out_dim}, {self.domain_hidden}) ReLU Linear(1), "
                                 "trained in every variant",
            "domain_log": [{"step": s, "reversal_weight": w, "domain_accuracy": a} for s, w, a in domain_log],
            "deviations": [f"reads the evaluated split's {len(target)} images without labels during training "
                           "(uses_unlabeled_target)",
                           "Adam with a cosine learning-rate schedule instead of the paper's SGD with "
                           "mu_p = 0.01 / (1 + 10 p)^0.75", "source and target share each BatchNorm batch"],
            "batchnorm": "running statistics (frozen) during adaptation and test",
        }
        return self

    def fit_info(self) -> dict[str, Any]:
        return {**super().fit_info(), "adaptation": recipe_description(self.recipe, self.head_steps, self.head_lr,
                                                                        self.head_weight_decay)}

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """A new linear head trained on the support embeddings, as in ``finetune``."""
        head = nn.Linear(self.encoder_.out_dim, support.n_way).to(ctx.device)
        return HeadPredictor(train_head(head, support.x, support.y, ctx, self.recipe, self.head_steps, self.head_lr,
                                        self.head_weight_decay))


@hookimpl
def register_algorithms(register):
    register(DANN)
