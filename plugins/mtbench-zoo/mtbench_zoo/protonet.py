"""Prototypical Networks. Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017, arXiv:1703.05175.

Episodic training of an encoder so that a query is classified by the squared Euclidean distance to the
mean embedding (prototype) of each class's support examples. Paper settings for Omniglot: 60-way
training episodes, 5 queries per class, training shot = test shot, Adam 1e-3 halved every 2000 episodes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtbench import Algorithm, FitData, RunContext, Support, Target, fit_loop, hookimpl

from ._common import (BatchHeadPredictor, FrozenEmbedding, HeadPredictor, class_means, class_means_batch,
                      episodes_on, nearest_centroid_accuracy, squared_distances, squared_distances_batch)


class ProtoNet(FrozenEmbedding, Algorithm):
    name = "protonet"
    kind = "meta"
    citation = "Snell et al. 2017, arXiv:1703.05175"
    constraints = {"episodes": ">= 1", "train_way": ">= 2", "train_shot": ">= 1", "train_query": ">= 1", "lr": "> 0",
                   "lr_decay_every": ">= 1", "validate_every": ">= 0", "val_episodes": ">= 1"}
    budgets = {
        # quick: one 20-way 1-shot fit serves every cell (recorded as deviations on each row).
        "quick": {"episodes": 1000, "train_way": 20, "train_shot": 1},
        # standard: the paper's 60-way episodes with the training shot equal to the test shot.
        "standard": {"episodes": 10_000, "train_way": 60, "train_shot": None},
        # The paper trains until the validation loss stops improving; 20k 60-way episodes covers it.
        "paper": {"episodes": 20_000, "train_way": 60},
    }

    def __init__(self, backbone: str = "conv4", episodes: int = 20_000, train_way: int = 60,
                 train_shot: int | None = None, train_query: int = 5, lr: float = 1e-3,
                 lr_decay_every: int = 2000, validate_every: int = 250, val_episodes: int = 50) -> None:
        self.backbone = backbone
        self.episodes = episodes
        self.train_way = train_way
        self.train_shot = train_shot
        self.train_query = train_query
        self.lr = lr
        self.lr_decay_every = lr_decay_every
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def fit_key(self, target: Target) -> dict:
        return {"k_shot": target.k_shot} if self.train_shot is None else {}

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)

    def fit(self, data: FitData, ctx: RunContext) -> "ProtoNet":
        self.init_fitted(data, ctx)
        shot = self.train_shot or data.target.k_shot
        way = min(self.train_way, data.train.n_classes)
        sampler = data.episodes(way, shot, self.train_query)

        def loss(ep) -> torch.Tensor:
            z = self.encoder_(torch.cat([ep.support_x, ep.query_x]))
            protos = class_means(z[: len(ep.support_y)], ep.support_y, ep.n_way)
            return F.cross_entropy(-squared_distances(z[len(ep.support_y):], protos), ep.query_y)

        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_accuracy": nearest_centroid_accuracy(self.encoder_, data, ctx, self.val_episodes)}
        history = fit_loop(loss, episodes_on(sampler, ctx), self.encoder_.parameters(), steps=self.episodes,
                           ctx=ctx, lr=self.lr, lr_decay_every=self.lr_decay_every, validate=validate,
                           validate_every=self.validate_every, description=f"fit protonet {way}w{shot}s")
        self.encoder_.eval()
        self.fit_info_ = {"history": history.as_dict(), "train_protocol": f"{way}-way {shot}-shot "
                          f"{self.train_query}-query", "batchnorm": "running statistics at test (non-transductive)",
                          "deviations": self._deviations(way)}
        return self

    def _deviations(self, way: int) -> list[str]:
        """Where this fit departs from Snell et al.'s Omniglot setting (section 3.1). A fixed ``train_shot`` makes
        one fit serve every cell, so that deviation is worded for all of them."""
        out = [f"{self.episodes} training episodes (paper: until the validation loss stops improving)"]
        if way != 60:
            out.append(f"trained {way}-way (paper: 60-way)")
        if self.train_shot is not None:
            out.append(f"one {self.train_shot}-shot fit for every test shot (paper: training shot = test shot)")
        if self.train_query != 5:
            out.append(f"{self.train_query} queries per class in training (paper: 5)")
        return out

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        protos = class_means(support.x, support.y, support.n_way)
        return HeadPredictor(lambda z: -squared_distances(z, protos))

    def adapts_embedded_in_batches(self) -> bool:
        return True

    def adapt_embedded_batch(self, support: Support, ctx: RunContext) -> BatchHeadPredictor:
        """Prototypes of E episodes at once (support.x [E, S, D]); queries [E, Q, D] -> probabilities [E, Q, N]."""
        protos = class_means_batch(support.x, support.y, support.n_way)
        return BatchHeadPredictor(lambda z: -squared_distances_batch(z, protos))


@hookimpl
def register_algorithms(register):
    register(ProtoNet)
