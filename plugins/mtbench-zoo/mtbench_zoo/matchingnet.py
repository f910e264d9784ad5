"""Matching Networks. Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks for One Shot
Learning", NeurIPS 2016, arXiv:1606.04080.

A query's label distribution is an attention-weighted sum of the support labels, P(y | x, S) = sum_i a(x, x_i) y_i,
where a is a softmax over the cosine similarities of the embeddings (paper eq. 1-2). Trained episodically on
the log-likelihood of the query labels. With full context embeddings (``fce=True``, paper section 2.1.2 and
appendix A.2) each support embedding is read in the context of the whole support set by a bidirectional LSTM,
g(x_i) = h_fwd_i + h_bwd_i + g'(x_i), and each query by an attention LSTM that reads the support K times:
h_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1}) + f'(x), r_k = sum_i softmax(h_k . g(x_i)) g(x_i).
Queries are never read together, so predictions are not transductive.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, RunContext, Support, Tags, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, episode_accuracy, episodes_on

KERNELS = ("softmax", "argmax")


def attention(query_z: torch.Tensor, support_z: torch.Tensor, kernel: str = "softmax",
              temperature: float = 1.0) -> torch.Tensor:
    """a(x, x_i) [n_query, n_support]: softmax over cosine similarities (the paper: ``temperature`` 1), or a one-hot
    on the most similar support example (``argmax``, which turns the classifier into cosine 1-nearest-neighbour).

    A temperature below 1 sharpens the softmax: cosines of non-negative (post-ReLU) embeddings lie in [0, 1],
    so unscaled, even a perfect match gets little of the attention and training is slow."""
    sims = F.normalize(query_z, dim=1) @ F.normalize(support_z, dim=1).T
    if kernel == "softmax":
        return (sims / temperature).softmax(1)
    if kernel == "argmax":
        return F.one_hot(sims.argmax(1), sims.shape[1]).to(sims.dtype)
    raise ValueError(f"unknown attention kernel {kernel!r}; use one of {', '.join(KERNELS)}")


def label_distribution(attn: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """P(y | x, S) = sum_i a(x, x_i) onehot(y_i): rows sum to one whenever the attention rows do."""
    return attn @ F.one_hot(support_y, n_way).to(attn.dtype)


class AttentionLSTMCell(nn.Module):
    """An LSTM cell whose recurrent input is the concatenation [h, r] of its output and the read-out (2d -> 4d
    gates), as in the paper's attention LSTM; its input is the query's own embedding f'(x)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.from_input = nn.Linear(dim, 4 * dim)
        self.from_state = nn.Linear(2 * dim, 4 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, r: torch.Tensor,
                c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = (self.from_input(x) + self.from_state(torch.cat([h, r], 1))).chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class FullContextEmbedding(nn.Module):
    """Full context embeddings g(x_i, S) and f(x, S) on top of per-image embeddings g' = f' (shared encoder)."""

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.dim, self.steps = dim, steps
        self.support_lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)
        self.query_cell = AttentionLSTMCell(dim)

    def support(self, z: torch.Tensor) -> torch.Tensor:
        """g(x_i, S): the support set, in its (class-major) order, read forwards and backwards."""
        out, _ = self.support_lstm(z[None])
        forward, backward = out[0].split(self.dim, 1)
        return z + forward + backward

    def query(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """f(x, S) after K read steps; each query row is processed on its own."""
        h, r, c = torch.zeros_like(z), torch.zeros_like(z), torch.zeros_like(z)
        for _ in range(self.steps):
            h_hat, c = self.query_cell(z, h, r, c)
            h = h_hat + z
            r = (h @ g.T).softmax(1) @ g
        return h


class MatchingHead:
    """The adapted classifier of one episode on embeddings: context (FCE or identity), then attention."""

    def __init__(self, support_z: torch.Tensor, support_y: torch.Tensor, n_way: int,
                 context: FullContextEmbedding | None, kernel: str, temperature: float = 1.0) -> None:
        self.context, self.kernel, self.n_way, self.temperature = context, kernel, n_way, temperature
        self.support_y = support_y
        self.support_g = context.support(support_z) if context is not None else support_z

    def __call__(self, query_z: torch.Tensor) -> torch.Tensor:
        f = self.context.query(query_z, self.support_g) if self.context is not None else query_z
        attn = attention(f, self.support_g, self.kernel, self.temperature)
        return label_distribution(attn, self.support_y, self.n_way)


class MatchingNet(FrozenEmbedding, Algorithm):
    name = "matchingnet"
    kind = "meta"
    tags = Tags(transductive=False)
    citation = "Vinyals et al. 2016, arXiv:1606.04080"
    constraints = {"episodes": ">= 1", "train_way": ">= 2", "train_query": ">= 1", "fce_steps": ">= 1",
                   "kernel": KERNELS, "temperature": "> 0", "lr": "> 0", "lr_decay_every": ">= 0",
                   "validate_every": ">= 0", "val_episodes": ">= 1"}
    budgets = {
        # Sized for a few minutes on 2 CPU cores; the paper trains far longer (see fit_info's deviations).
        # quick: 20-way training episodes (as ProtoNet's quick profile) and a cosine temperature of 0.1, chosen on
        # meta-validation; both are recorded as deviations.
        "quick": {"episodes": 1500, "train_way": 20, "temperature": 0.1},
        "standard": {"episodes": 20_000, "temperature": 0.1},
        # The paper gives no episode count for Omniglot; 100k episodes is a long run by any account.
        "paper": {"episodes": 100_000},
    }

    def __init__(self, backbone: str = "conv4", episodes: int = 100_000, train_way: int | None = None,
                 train_query: int = 5, fce: bool = False, fce_steps: int = 5,
                 kernel: Literal["softmax", "argmax"] = "softmax", temperature: float = 1.0,
                 lr: float = 1e-3, lr_decay_every: int = 0, validate_every: int = 500,
                 val_episodes: int = 50) -> None:
        self.backbone = backbone
        self.episodes = episodes
        self.train_way = train_way
        self.train_query = train_query
        self.fce = fce
        self.fce_steps = fce_steps
        self.kernel = kernel
        self.temperature = temperature
        self.lr = lr
        self.lr_decay_every = lr_decay_every
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        self.context_ = FullContextEmbedding(self.encoder_.out_dim, self.fce_steps).to(ctx.device) if self.fce else None

    def fit(self, data: FitData, ctx: RunContext) -> "MatchingNet":
        self.init_fitted(data, ctx)
        target = data.target
        way = min(self.train_way or target.n_way, data.train.n_classes)
        sampler = data.episodes(way, target.k_shot, self.train_query)

        def loss(ep) -> torch.Tensor:
            z = self.encoder_(torch.cat([ep.support_x, ep.query_x]))
            n = len(ep.support_y)
            head = MatchingHead(z[:n], ep.support_y, ep.n_way, self.context_, "softmax", self.temperature)
            return F.nll_loss(head(z[n:]).clamp_min(1e-12).log(), ep.query_y)

        params = list(self.encoder_.parameters()) + (list(self.context_.parameters()) if self.fce else [])
        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_accuracy": episode_accuracy(self.adapt, data, ctx, self.val_episodes)}
        history = fit_loop(loss, episodes_on(sampler, ctx), params, steps=self.episodes, ctx=ctx, lr=self.lr,
                           lr_decay_every=self.lr_decay_every or None, validate=validate,
                           validate_every=self.validate_every,
                           description=f"fit matchingnet {way}w{target.k_shot}s{' fce' if self.fce else ''}")
        self.encoder_.eval()
        self.fit_info_ = {
            "history": history.as_dict(),
            "train_protocol": f"{way}-way {target.k_shot}-shot {self.train_query}-query",
            "batchnorm": "running statistics at test (non-transductive)",
            "fce": self.fce, "deviations": self._deviations(way, target.n_way),
        }
        return self

    def _deviations(self, way: int, test_way: int) -> list[str]:
        out = [f"{self.episodes} training episodes (the paper trains to convergence; no count given)"]
        if way != test_way:
            out.append(f"trained {way}-way (the paper trains on the test protocol, {test_way}-way)")
        if self.temperature != 1.0:
            out.append(f"cosine similarities divided by a temperature of {self.temperature} before the softmax "
                       "(paper: unscaled)")
        if self.fce:
            out.append("one encoder for f' and g' (shared weights)")
        return out

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """The episode's classifier on frozen embeddings: FCE context (if any), then attention over the support."""
        with torch.no_grad():
            head = MatchingHead(support.x, support.y, support.n_way, self.context_, self.kernel, self.temperature)
        return HeadPredictor(head, returns_logits=False)


@hookimpl
def register_algorithms(register):
    register(MatchingNet)
