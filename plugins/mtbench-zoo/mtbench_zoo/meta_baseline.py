"""Meta-Baseline (Chen, Liu, Xu, Darrell & Wang, "Meta-Baseline: Exploring Simple Meta-Learning for
Few-Shot Learning", ICCV 2021, arXiv:2003.04390).

Two stages: the Classifier-Baseline (a linear classifier over every base class, the same pretraining as
``finetune`` and shared with it through the cache), then episodic meta-training of the whole encoder with
a cosine nearest-centroid classifier, logits ``tau * cos(f(x), c_k)`` with a learned temperature tau. The
encoder kept is the one with the best validation accuracy of the meta stage (the paper selects on
validation too, as the meta stage can lower novel-class accuracy).
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
import torch.nn.functional as F

from mtbench import Algorithm, FitData, RunContext, Support, fit_loop, hookimpl

from ._common import (BatchHeadPredictor, FrozenEmbedding, HeadPredictor, class_means, class_means_batch,
                      episodes_on)
from .pretraining import PRETRAIN_BUDGETS, pretrained_encoder


def cosine_centroid_logits(query: torch.Tensor, support: torch.Tensor, support_y: torch.Tensor, n_way: int,
                           tau: torch.Tensor | float) -> torch.Tensor:
    """``tau * cos(q, c_k)`` with c_k the mean support feature of class k; [n_query, n_way]."""
    return cosine_logits(query, class_means(support, support_y, n_way), tau)


def cosine_logits(query: torch.Tensor, centroids: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    return tau * F.normalize(query, dim=1) @ F.normalize(centroids, dim=1).T


def validation_accuracy(alg: Algorithm, data: FitData, ctx: RunContext, n_episodes: int) -> float:
    """Accuracy of ``alg.adapt`` on validation episodes of the target protocol (for model selection)."""
    target = data.target
    sampler = data.episodes(target.n_way, target.k_shot, target.n_query, split="val", seed_offset=7)
    correct = total = 0
    for i in range(n_episodes):
        ep = sampler[i].to(ctx.device)
        pred = alg.adapt(ep.support(), ctx).predict_proba(ep.query_x).argmax(1)
        correct += int((pred == ep.query_y).sum())
        total += len(ep.query_y)
    return correct / max(total, 1)


def train_queries(data: FitData, wanted: int) -> int:
    """Queries per class of training episodes: ``wanted``, or fewer when the base classes are smaller."""
    return max(1, min(wanted, int(data.train.class_counts.min()) - data.target.k_shot))


class MetaBaseline(FrozenEmbedding, Algorithm):
    name = "meta-baseline"
    kind = "joint"
    citation = "Chen et al. 2021, arXiv:2003.04390"
    budgets = {b: {**PRETRAIN_BUDGETS[b], "meta_episodes": n}
               for b, n in (("quick", 250), ("standard", 4000), ("paper", 20_000))}
    constraints = {"pretrain_steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "meta_episodes": ">= 0",
                   "meta_batch": ">= 1", "meta_lr": "> 0", "momentum": ">= 0, < 1", "weight_decay": ">= 0",
                   "tau": "> 0", "train_query": ">= 1", "validate_every": ">= 0", "val_episodes": ">= 1"}

    def __init__(self, backbone: str = "conv4", pretrain_steps: int = 10_000, batch_size: int = 128,
                 lr: float = 1e-3, meta_episodes: int = 20_000, meta_batch: int = 4, meta_lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 5e-4, tau: float = 10.0, train_query: int = 15,
                 validate_every: int = 100, val_episodes: int = 100) -> None:
        self.backbone = backbone
        self.pretrain_steps = pretrain_steps
        self.batch_size = batch_size
        self.lr = lr
        self.meta_episodes = meta_episodes
        self.meta_batch = meta_batch
        self.meta_lr = meta_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tau = tau
        self.train_query = train_query
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        self.tau_ = torch.tensor(float(self.tau), device=ctx.device)

    def fit(self, data: FitData, ctx: RunContext) -> "MetaBaseline":
        self.init_fitted(data, ctx)
        pretrained, info = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps, self.batch_size, self.lr)
        info.pop("head", None)
        self.encoder_.load_state_dict(pretrained.state_dict())
        tau = torch.nn.Parameter(torch.tensor(float(self.tau), device=ctx.device))
        self.tau_ = tau.detach()
        target = data.target
        query = train_queries(data, self.train_query)
        sampler = data.episodes(target.n_way, target.k_shot, query, seed_offset=3)
        episodes = episodes_on(sampler, ctx)
        batches = ([next(episodes) for _ in range(self.meta_batch)] for _ in itertools.count())

        def loss(tasks) -> torch.Tensor:
            total = 0.0
            for ep in tasks:
                z = self.encoder_(torch.cat([ep.support_x, ep.query_x]))
                n = len(ep.support_y)
                total = total + F.cross_entropy(cosine_centroid_logits(z[n:], z[:n], ep.support_y, ep.n_way, tau),
                                                ep.query_y)
            return total / len(tasks)

        best: dict[str, Any] = {"step": 0, "val_accuracy": None, "state": None, "tau": float(self.tau)}
        calls = [0]

        def validate() -> dict[str, float]:
            """Score the current encoder on validation episodes; keep it if it is the best so far."""
            step = min(calls[0] * self.validate_every, self.meta_episodes)
            calls[0] += 1
            self.tau_ = tau.detach().clone()
            score = validation_accuracy(self, data, ctx, self.val_episodes)
            self.encoder_.train()
            if best["val_accuracy"] is None or score > best["val_accuracy"]:
                best.update(step=step, val_accuracy=score, state=copy.deepcopy(self.encoder_.state_dict()),
                            tau=float(tau.detach()))
            return {"val_accuracy": score, "tau": float(tau.detach())}

        validating = data.val is not None and bool(self.validate_every)
        start_score = validate()["val_accuracy"] if validating else None  # the Classifier-Baseline (step 0)
        self.encoder_.train()
        history = fit_loop(loss, batches, [*self.encoder_.parameters(), tau], steps=self.meta_episodes, ctx=ctx,
                           lr=self.meta_lr, optimizer="sgd", momentum=self.momentum, weight_decay=self.weight_decay,
                           validate=validate if validating else None, validate_every=self.validate_every,
                           description=f"meta-baseline {target.n_way}w{target.k_shot}s meta stage")
        if best["state"] is not None:
            self.encoder_.load_state_dict(best["state"])
            self.tau_ = torch.tensor(best["tau"], device=ctx.device)
        else:
            self.tau_ = tau.detach().clone()
        self.encoder_.eval()
        self.fit_info_ = {
            "history": history.as_dict(), "pretrain": info,
            "classifier_baseline_val_accuracy": start_score,
            "selected": {"step": best["step"], "val_accuracy": best["val_accuracy"], "tau": round(best["tau"], 4)},
            "meta_stage": f"{target.n_way}-way {target.k_shot}-shot {query}-query episodes, "
                          f"{self.meta_batch} per batch, SGD lr {self.meta_lr} momentum {self.momentum} "
                          f"(Nesterov) weight decay {self.weight_decay}",
            "deviations": ["Conv-4 on Omniglot (the paper: ResNet-12 on miniImageNet/tieredImageNet)",
                           "Classifier-Baseline trained with Adam and a cosine schedule (paper: SGD lr 0.1)"],
            "batchnorm": "batch statistics in the meta stage; running statistics at test",
        }
        return self

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """Cosine nearest-centroid with the learned temperature, on the support embeddings."""
        centroids = class_means(support.x, support.y, support.n_way)
        tau = self.tau_.clone()
        return HeadPredictor(lambda q: cosine_logits(q, centroids, tau))

    def adapts_embedded_in_batches(self) -> bool:
        return True

    def adapt_embedded_batch(self, support: Support, ctx: RunContext) -> BatchHeadPredictor:
        """:meth:`adapt_embedded` of E episodes at once: support.x [E, S, D], queries [E, Q, D]."""
        centroids = class_means_batch(support.x, support.y, support.n_way)
        tau = self.tau_.clone()
        return BatchHeadPredictor(lambda q: tau * F.normalize(q, dim=2) @ F.normalize(centroids, dim=2).transpose(1, 2))


@hookimpl
def register_algorithms(register):
    register(MetaBaseline)
