"""Relation Networks. Sung, Yang, Zhang, Xiang, Torr & Hospedales, "Learning to Compare: Relation Network for
Few-Shot Learning", CVPR 2018, arXiv:1711.06025.

An embedding module maps each image to a feature map; the K support feature maps of a class are summed; each
(class, query) pair is concatenated along channels and scored by a learned relation module (two conv blocks,
two fully connected layers, sigmoid) trained by mean squared error against one-hot targets (paper section 3,
figure 2). Settings of the authors' Omniglot code (github.com/floodsung/LearningToCompare_FSL): Adam 1e-3
halved every 100,000 episodes, gradients clipped to norm 0.5, 1,000,000 training episodes, 19 / 10 / 10
queries per class for 5-way 1-shot / 5-way 5-shot / 20-way 1-shot, relation hidden size 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, RunContext, Support, Tags, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, episode_accuracy, episodes_on

PAPER_QUERIES = {(5, 1): 19, (5, 5): 10, (20, 1): 10, (20, 5): 5}


def _block(c_in: int, c_out: int, padding: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)


class RelationConv4(nn.Module):
    """The paper's embedding module: four conv3x3-64 blocks, the first two unpadded and max-pooled, the last two
    padded without pooling (28x28 -> 64x5x5). Returns flat features; ``feature_shape`` gives the map's shape so
    the relation module can reshape them. A pool is skipped where the map is already below 2x2 (tiny test images)."""

    def __init__(self, in_shape: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        layers, shape = [], tuple(in_shape)
        for i in range(4):
            unpadded = i < 2 and min(shape[1:]) >= 3
            conv_hw = [s - 2 if unpadded else s for s in shape[1:]]
            pool = i < 2 and min(conv_hw) >= 2
            layers.append(_block(shape[0], hidden, 0 if unpadded else 1, pool))
            shape = (hidden, *(s // 2 if pool else s for s in conv_hw))
        self.features = nn.Sequential(*layers)
        self.feature_shape = shape
        self.out_dim = int(torch.tensor(self.feature_shape).prod())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


def feature_shape(encoder: nn.Module) -> tuple[int, ...]:
    """The feature-map shape of an encoder: its ``feature_shape``, or (out_dim, 1, 1) for a flat backbone."""
    return tuple(getattr(encoder, "feature_shape", (encoder.out_dim, 1, 1)))


class RelationModule(nn.Module):
    """g_phi: two conv blocks (conv3x3-64, BatchNorm, ReLU, 2x2 max-pool) over the concatenated pair, then
    FC -> ReLU -> FC -> sigmoid: a relation score in (0, 1) per pair."""

    def __init__(self, in_shape: tuple[int, ...], channels: int = 64, hidden: int = 8) -> None:
        super().__init__()
        c, h, w = in_shape
        blocks = []
        for c_in in (2 * c, channels):
            pool = min(h, w) >= 2
            blocks.append(_block(c_in, channels, padding=1, pool=pool))
            h, w = (h // 2, w // 2) if pool else (h, w)
        self.convs = nn.Sequential(*blocks)
        self.fc1 = nn.Linear(channels * h * w, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Scores of concatenated (class, query) maps [n, 2c, h, w]."""
        return self._head(self.convs[0][1:](self.convs[0][0](pairs)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(self.convs[1:](x).flatten(1))))).squeeze(1)

    def score_all_pairs(self, class_maps: torch.Tensor, query_maps: torch.Tensor) -> torch.Tensor:
        """r[q, j] = forward(concat(class_j, query_q)) for every pair, [n_query, n_way], without building the pairs:
        the first convolution is linear in its input, so conv(concat(a, b)) = conv_a(a) + conv_b(b) with the
        weight split by input channel. Each class and each query is convolved once, not once per pair."""
        conv, c = self.convs[0][0], class_maps.shape[1]
        a = F.conv2d(class_maps, conv.weight[:, :c], conv.bias, padding=conv.padding)
        b = F.conv2d(query_maps, conv.weight[:, c:], None, padding=conv.padding)
        x = (b[:, None] + a[None]).flatten(0, 1)
        return self._head(self.convs[0][1:](x)).view(len(query_maps), len(class_maps))


def relation_scores(relation: RelationModule, class_maps: torch.Tensor, query_maps: torch.Tensor) -> torch.Tensor:
    """r[q, j] = g_phi(concat(class_j, query_q)) for every pair: [n_query, n_way]."""
    return relation.score_all_pairs(class_maps, query_maps)


def class_sums(z: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """The element-wise sum of each class's support embeddings (the paper's K-shot class feature)."""
    return torch.zeros(n_way, *z.shape[1:], dtype=z.dtype, device=z.device).index_add_(0, y, z)


class RelationHead:
    """One episode's classifier on flat embeddings: relation scores against the summed class maps, normalised
    to sum to one per query (the argmax is the paper's prediction)."""

    def __init__(self, relation: RelationModule, shape: tuple[int, ...], support_z: torch.Tensor,
                 support_y: torch.Tensor, n_way: int) -> None:
        self.relation, self.shape = relation, shape
        self.classes = class_sums(support_z.view(-1, *shape), support_y, n_way)

    def scores(self, query_z: torch.Tensor) -> torch.Tensor:
        return relation_scores(self.relation, self.classes, query_z.view(-1, *self.shape))

    def __call__(self, query_z: torch.Tensor) -> torch.Tensor:
        was_training = self.relation.training
        self.relation.eval()  # running BatchNorm statistics: a query's score never depends on the others
        try:
            with torch.no_grad():
                s = self.scores(query_z).clamp_min(1e-12)
            return s / s.sum(1, keepdim=True)
        finally:
            self.relation.train(was_training)


class RelationNet(FrozenEmbedding, Algorithm):
    name = "relationnet"
    kind = "meta"
    tags = Tags(transductive=False)
    citation = "Sung et al. 2018, arXiv:1711.06025"
    constraints = {"episodes": ">= 1", "train_query": ">= 1", "lr": "> 0", "lr_decay_every": ">= 0",
                   "grad_clip": ">= 0", "relation_hidden": ">= 1", "validate_every": ">= 0", "val_episodes": ">= 1"}
    budgets = {
        # Sized for a few minutes on 2 CPU cores (see fit_info's deviations for what that costs).
        "quick": {"episodes": 3000, "train_query": 5},
        "standard": {"episodes": 20_000},
        "paper": {"episodes": 1_000_000, "lr_decay_every": 100_000},
    }

    def __init__(self, backbone: str = "conv4-relation", episodes: int = 1_000_000, train_query: int | None = None,
                 lr: float = 1e-3, lr_decay_every: int = 100_000, grad_clip: float = 0.5, relation_hidden: int = 8,
                 validate_every: int = 500, val_episodes: int = 50) -> None:
        self.backbone = backbone
        self.episodes = episodes
        self.train_query = train_query
        self.lr = lr
        self.lr_decay_every = lr_decay_every
        self.grad_clip = grad_clip
        self.relation_hidden = relation_hidden
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        self.relation_ = RelationModule(feature_shape(self.encoder_), hidden=self.relation_hidden).to(ctx.device)

    def fit(self, data: FitData, ctx: RunContext) -> "RelationNet":
        self.init_fitted(data, ctx)
        target = data.target
        paper_query = PAPER_QUERIES.get((target.n_way, target.k_shot), 10)
        query = self.train_query or paper_query
        sampler = data.episodes(target.n_way, target.k_shot, query)
        shape = feature_shape(self.encoder_)

        def loss(ep) -> torch.Tensor:
            z = self.encoder_(torch.cat([ep.support_x, ep.query_x]))
            n = len(ep.support_y)
            head = RelationHead(self.relation_, shape, z[:n], ep.support_y, ep.n_way)
            return F.mse_loss(head.scores(z[n:]), F.one_hot(ep.query_y, ep.n_way).to(z.dtype))

        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_accuracy": episode_accuracy(self.adapt, data, ctx, self.val_episodes)}
        history = fit_loop(loss, episodes_on(sampler, ctx), [*self.encoder_.parameters(), *self.relation_.parameters()],
                           steps=self.episodes, ctx=ctx, lr=self.lr, lr_decay_every=self.lr_decay_every or None,
                           grad_clip=self.grad_clip or None, validate=validate, validate_every=self.validate_every,
                           description=f"fit relationnet {target.n_way}w{target.k_shot}s")
        self.encoder_.eval()
        self.relation_.eval()
        deviations = [f"{self.episodes} training episodes (authors' code: 1,000,000)",
                      "BatchNorm on running statistics at test (the authors' code keeps batch statistics)",
                      "one gradient-norm clip over both modules together (authors' code: 0.5 for each)"]
        if query != paper_query:
            deviations.append(f"{query} queries per class in training (paper: {paper_query})")
        if self.backbone != "conv4-relation":
            deviations.append(f"embedding module {self.backbone!r} (paper: its own Conv-4, 64x5x5 maps)")
        self.fit_info_ = {"history": history.as_dict(),
                          "train_protocol": f"{target.n_way}-way {target.k_shot}-shot {query}-query",
                          "batchnorm": "running statistics at test (non-transductive)",
                          "feature_shape": list(shape), "deviations": deviations}
        return self

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """The episode's classifier on frozen embeddings: relation scores against the summed class maps."""
        head = RelationHead(self.relation_, feature_shape(self.encoder_), support.x, support.y, support.n_way)
        return HeadPredictor(head, returns_logits=False)


def _relation_conv4(in_shape: tuple[int, ...], **kwargs) -> nn.Module:
    return RelationConv4(in_shape, **kwargs)


@hookimpl
def register_backbones(register):
    register("conv4-relation", _relation_conv4)


@hookimpl
def register_algorithms(register):
    register(RelationNet)
