"""Small pieces shared by the built-in algorithms: embedding, prototypes, predictors."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import EpisodeSampler, FitData, RunContext, Support


@torch.no_grad()
def embed(encoder: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Features of ``x`` with the encoder in eval mode (BatchNorm uses its running statistics)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(chunk) for chunk in x.split(batch_size)])
    finally:
        encoder.train(was_training)


def class_means(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean feature per label 0..n_way-1 (prototypes), whatever the order of the support set."""
    sums = torch.zeros(n_way, z.shape[1], device=z.device, dtype=z.dtype).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=n_way).clamp_min(1).to(z.dtype)
    return sums / counts[:, None]


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None]).clamp_min(0)


def class_means_batch(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """:func:`class_means` of E episodes at once: ``z`` [E, S, D], labels ``y`` [S] shared by the episodes;
    the same additions in the same order, so each episode's prototypes are exactly :func:`class_means`'s."""
    sums = torch.zeros(z.shape[0], n_way, z.shape[2], device=z.device, dtype=z.dtype).index_add_(1, y, z)
    counts = torch.bincount(y, minlength=n_way).clamp_min(1).to(z.dtype)
    return sums / counts[:, None]


def squared_distances_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`squared_distances` of E episodes at once: ``a`` [E, Q, D], ``b`` [E, N, D] -> [E, Q, N]."""
    return (a.pow(2).sum(2, keepdim=True) - 2 * a @ b.transpose(1, 2) + b.pow(2).sum(2)[:, None]).clamp_min(0)


def episodes_on(sampler: EpisodeSampler, ctx: RunContext) -> Iterator:
    """Training episodes 0, 1, 2, ... on the run's device."""
    return (sampler[i].to(ctx.device) for i in itertools.count())


@dataclass(frozen=True)
class FeaturePredictor:
    """Embed queries with a frozen encoder, then apply ``head(features) -> logits or probabilities``."""

    encoder: nn.Module
    head: Callable[[torch.Tensor], torch.Tensor]
    returns_logits: bool = True

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(embed(self.encoder, x))
        return F.softmax(out, dim=1) if self.returns_logits else out


@dataclass(frozen=True)
class HeadPredictor:
    """An :class:`mtbench.EmbeddedPredictor`: ``head(embeddings) -> logits or probabilities``, no grad."""

    head: Callable[[torch.Tensor], torch.Tensor]
    returns_logits: bool = True

    @torch.no_grad()
    def predict_proba(self, z: torch.Tensor) -> torch.Tensor:
        out = self.head(z)
        return F.softmax(out, dim=1) if self.returns_logits else out


@dataclass(frozen=True)
class BatchHeadPredictor:
    """:class:`HeadPredictor` of E episodes at once: ``head`` maps query embeddings [E, Q, D] to logits
    [E, Q, N], softmax over the classes."""

    head: Callable[[torch.Tensor], torch.Tensor]

    @torch.no_grad()
    def predict_proba(self, z: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.head(z), dim=2)


@dataclass(frozen=True)
class EncodedPredictor:
    """Images in, probabilities out: embed queries with the frozen encoder, then the embedded predictor."""

    encoder: nn.Module
    embedded: HeadPredictor

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedded.predict_proba(embed(self.encoder, x))


class FrozenEmbedding:
    """Mixin for algorithms whose adaptation only reads ``embed(self.encoder_, x)``.

    They implement ``adapt_embedded(support, ctx)`` (``support.x`` holds embeddings) and get
    ``adapt`` from it, so the per-episode path and embed-once evaluation compute the same thing, plus
    the opt-in ``embeds_once`` / ``embed_images`` of the algorithm contract.
    """

    def embeds_once(self) -> bool:
        return True

    def embed_images(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        return embed(self.encoder_, x)

    def adapt(self, support: Support, ctx: RunContext) -> EncodedPredictor:
        embedded = Support(embed(self.encoder_, support.x), support.y, support.n_way)
        return EncodedPredictor(self.encoder_, self.adapt_embedded(embedded, ctx))


def nearest_centroid_accuracy(encoder: nn.Module, data: FitData, ctx: RunContext, n_episodes: int) -> float:
    """Validation score any feature learner can report: prototype accuracy on val-split episodes."""
    target = data.target
    sampler = data.episodes(target.n_way, target.k_shot, target.n_query, split="val", seed_offset=7)
    correct = total = 0
    for i in range(n_episodes):
        ep = sampler[i].to(ctx.device)
        protos = class_means(embed(encoder, ep.support_x), ep.support_y, ep.n_way)
        pred = (-squared_distances(embed(encoder, ep.query_x), protos)).argmax(1)
        correct += int((pred == ep.query_y).sum())
        total += len(ep.query_y)
    return correct / max(total, 1)


def episode_accuracy(adapt: Callable[..., Any], data: FitData, ctx: RunContext, n_episodes: int) -> float:
    """Meta-validation score of a learner's own predictor: query accuracy on val-split episodes of the target
    protocol (``adapt(support, ctx)`` returns a predictor). Used to select settings on validation, never test."""
    target = data.target
    sampler = data.episodes(target.n_way, target.k_shot, target.n_query, split="val", seed_offset=7)
    correct = total = 0
    for i in range(n_episodes):
        ep = sampler[i].to(ctx.device)
        pred = adapt(ep.support(), ctx).predict_proba(ep.query_x).argmax(1)
        correct += int((pred == ep.query_y).sum())
        total += len(ep.query_y)
    return correct / max(total, 1)
