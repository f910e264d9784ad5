"""Memory module. Kaiser, Nachum, Roy & Bengio, "Learning to Remember Rare Events", ICLR 2017, arXiv:1703.03129.

A key-value memory on top of an embedding: keys are normalised query vectors, values are labels, every slot
has an age. A query q (the normalised embedding) is answered by the value of its nearest key by cosine
similarity, n1 = argmax_i q . K[i] (paper section 2). Training minimises the memory loss: with n_p the
nearest key holding the correct value v and n_b the nearest holding another,
loss = [q . K[n_b] - q . K[n_p] + alpha]_+ (gradients reach q only; the memory is not trained by backprop).
Update rule after each example (paper section 2):

* hit, V[n1] == v: K[n1] <- normalise(q + K[n1]), A[n1] <- 0;
* miss: n' = argmax_i (A[i] + r_i) with r_i random, |r_i| << |M| (the random part only breaks ties between
  equally old slots here), then K[n'] <- q, V[n'] <- v, A[n'] <- 0;
* in both cases the age of every slot that was not written is incremented by 1.

In this benchmark the memory lives for one episode: the support set is written into an empty memory, one
example after another, and the queries are answered from it without being written, so no episode ever sees
another episode's examples and each query is answered independently of the others.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import Algorithm, FitData, RunContext, Support, Tags, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, episode_accuracy, episodes_on

EMPTY = -1  # the value of a slot nothing was written to


class KeyValueMemory:
    """Keys [size, dim] (unit norm), values [size] (labels, EMPTY if unused) and ages [size]."""

    def __init__(self, size: int, dim: int, age_noise: float = 0.5, choose_k: int = 256,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.keys = torch.zeros(size, dim, device=device, dtype=dtype)
        self.values = torch.full((size,), EMPTY, device=device, dtype=torch.long)
        self.ages = torch.zeros(size, device=device, dtype=dtype)
        self.age_noise, self.choose_k, self.generator = age_noise, choose_k, generator

    def similarities(self, q: torch.Tensor) -> torch.Tensor:
        """q . K for every slot, -inf on empty slots, restricted to each query's ``choose_k`` nearest keys."""
        sims = (q @ self.keys.detach().T).masked_fill(self.values == EMPTY, -math.inf)
        k = min(self.choose_k, sims.shape[1])
        if k < sims.shape[1]:
            kth = sims.topk(k, dim=1).values[:, -1:]
            sims = sims.masked_fill(sims < kth, -math.inf)
        return sims

    def loss(self, q: torch.Tensor, v: torch.Tensor, margin: float) -> torch.Tensor:
        """The memory loss per query, [q . K[n_b] - q . K[n_p] + margin]_+; a missing positive (or negative)
        key counts as similarity 0, as in the authors' code."""
        sims = self.similarities(q)
        same = self.values[None] == v[:, None]
        positive = sims.masked_fill(~same, -math.inf).amax(1)
        negative = sims.masked_fill(same, -math.inf).amax(1)
        positive = torch.where(torch.isfinite(positive), positive, torch.zeros_like(positive))
        negative = torch.where(torch.isfinite(negative), negative, torch.zeros_like(negative))
        return F.relu(negative - positive + margin)

    def nearest(self, q: torch.Tensor) -> torch.Tensor:
        """n1 for each query row (only meaningful once something is written)."""
        return self.similarities(q).argmax(1)

    @torch.no_grad()
    def write(self, q: torch.Tensor, v: int) -> str:
        """Apply the update rule for one normalised query ``q`` [dim] with label ``v``; returns "hit" or "miss"."""
        q = q.detach()
        filled = bool((self.values != EMPTY).any())
        n1 = int(self.nearest(q[None])[0]) if filled else -1
        if filled and int(self.values[n1]) == v:
            slot, outcome = n1, "hit"
            self.keys = self.keys.index_copy(0, torch.tensor([slot], device=q.device),
                                             F.normalize(q + self.keys[slot], dim=0)[None])
        else:
            noise = (torch.rand(len(self.ages), generator=self.generator, dtype=self.ages.dtype)
                     .to(self.ages.device) * 2 - 1) * self.age_noise
            slot, outcome = int((self.ages + noise).argmax()), "miss"
            self.keys = self.keys.index_copy(0, torch.tensor([slot], device=q.device), q[None].to(self.keys.dtype))
            self.values[slot] = v
        self.ages += 1
        self.ages[slot] = 0
        return outcome

    def class_similarities(self, q: torch.Tensor, n_way: int) -> torch.Tensor:
        """For each query and label, the similarity of the nearest key holding that label [n, n_way]."""
        sims = self.similarities(q)
        per_label = sims.new_full((len(q), n_way), -math.inf)
        filled = self.values != EMPTY
        return per_label.scatter_reduce(1, self.values[filled].expand(len(q), -1), sims[:, filled], "amax")


class MemoryHead:
    """One episode's classifier: the support keys written into an empty memory, queries answered by their nearest
    key. Probabilities are a softmax over each label's nearest similarity with the authors' inverse temperature
    max(1, log(0.2 k) / alpha); its argmax is the paper's answer V[n1]."""

    def __init__(self, memory: KeyValueMemory, n_way: int, inverse_temperature: float,
                 project: nn.Module) -> None:
        self.memory, self.n_way, self.inverse_temperature, self.project = memory, n_way, inverse_temperature, project

    def __call__(self, query_z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = F.normalize(self.project(query_z), dim=1)
            sims = self.memory.class_similarities(q, self.n_way)
            sims = torch.where(torch.isfinite(sims), sims, torch.full_like(sims, -2.0))  # a label never written
            return (self.inverse_temperature * sims).softmax(1)


class Memory(FrozenEmbedding, Algorithm):
    name = "memory"
    kind = "meta"
    tags = Tags(transductive=False)
    citation = "Kaiser et al. 2017, arXiv:1703.03129"
    constraints = {"episodes": ">= 1", "train_way": ">= 2", "train_query": ">= 1", "memory_size": ">= 1",
                   "choose_k": ">= 1", "margin": ">= 0", "age_noise": ">= 0", "lr": "> 0", "lr_decay_every": ">= 0",
                   "validate_every": ">= 0", "val_episodes": ">= 1"}
    budgets = {
        # Sized for a few minutes on 2 CPU cores (see fit_info's deviations).
        # quick: 20-way training episodes (as ProtoNet's quick profile), recorded as a deviation.
        "quick": {"episodes": 1500, "train_way": 20},
        "standard": {"episodes": 20_000},
        "paper": {"episodes": 100_000},
    }

    def __init__(self, backbone: str = "conv4", episodes: int = 100_000, train_way: int | None = None,
                 train_query: int = 5, memory_size: int = 256, choose_k: int = 256, margin: float = 0.1,
                 age_noise: float = 0.5, lr: float = 1e-3, lr_decay_every: int = 0, validate_every: int = 500,
                 val_episodes: int = 50) -> None:
        self.backbone = backbone
        self.episodes = episodes
        self.train_way = train_way
        self.train_query = train_query
        self.memory_size = memory_size
        self.choose_k = choose_k
        self.margin = margin
        self.age_noise = age_noise
        self.lr = lr
        self.lr_decay_every = lr_decay_every
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ctx.build_backbone(self.backbone, data.train.shape)
        # The authors' code projects the embedding by a learned matrix before normalising it into a key.
        self.project_ = nn.Linear(self.encoder_.out_dim, self.encoder_.out_dim, bias=False).to(ctx.device)

    def empty_memory(self, seed: int, device: torch.device) -> KeyValueMemory:
        generator = torch.Generator().manual_seed(seed)
        return KeyValueMemory(self.memory_size, self.encoder_.out_dim, self.age_noise, self.choose_k,
                              generator, device)

    def fill(self, memory: KeyValueMemory, keys: torch.Tensor, labels: torch.Tensor) -> KeyValueMemory:
        for q, v in zip(keys, labels.tolist()):
            memory.write(q, v)
        return memory

    def fit(self, data: FitData, ctx: RunContext) -> "Memory":
        self.init_fitted(data, ctx)
        target = data.target
        way = min(self.train_way or target.n_way, data.train.n_classes)
        sampler = data.episodes(way, target.k_shot, self.train_query)
        step = iter(range(1 << 62))

        def loss(ep) -> torch.Tensor:
            q = F.normalize(self.project_(self.encoder_(torch.cat([ep.support_x, ep.query_x]))), dim=1)
            n = len(ep.support_y)
            memory = self.empty_memory(data.seed * 1_000_003 + next(step), q.device)
            support_losses = []
            for i, v in enumerate(ep.support_y.tolist()):  # each support example is queried, then written
                support_losses.append(memory.loss(q[i:i + 1], ep.support_y[i:i + 1], self.margin))
                memory.write(q[i], v)
            query_losses = memory.loss(q[n:], ep.query_y, self.margin)
            return torch.cat([*support_losses, query_losses]).mean()

        validate = None
        if data.val is not None and self.validate_every:
            validate = lambda: {"val_accuracy": episode_accuracy(self.adapt, data, ctx, self.val_episodes)}
        history = fit_loop(loss, episodes_on(sampler, ctx), [*self.encoder_.parameters(), *self.project_.parameters()],
                           steps=self.episodes, ctx=ctx, lr=self.lr, lr_decay_every=self.lr_decay_every or None,
                           validate=validate, validate_every=self.validate_every,
                           description=f"fit memory {way}w{target.k_shot}s")
        self.encoder_.eval()
        deviations = [f"{self.episodes} training episodes",
                      "queries of a training episode are answered from the support memory and not written "
                      "(the authors' code queries, then writes, every example of an episode in turn)"]
        if way != target.n_way:
            deviations.append(f"trained {way}-way (test protocol {target.n_way}-way)")
        self.fit_info_ = {"history": history.as_dict(),
                          "train_protocol": f"{way}-way {target.k_shot}-shot {self.train_query}-query",
                          "batchnorm": "running statistics at test (non-transductive)",
                          "memory": {"size": self.memory_size, "choose_k": self.choose_k, "margin": self.margin,
                                     "age_noise": self.age_noise},
                          "deviations": deviations}
        return self

    def inverse_temperature(self) -> float:
        return max(1.0, math.log(0.2 * self.choose_k) / self.margin) if self.choose_k >= 5 else 1.0

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """The episode's classifier on frozen embeddings: the support written into an empty memory, in order."""
        with torch.no_grad():
            keys = F.normalize(self.project_(support.x), dim=1)
        memory = self.fill(self.empty_memory(0, support.x.device), keys, support.y)
        return HeadPredictor(MemoryHead(memory, support.n_way, self.inverse_temperature(), self.project_),
                             returns_logits=False)


@hookimpl
def register_algorithms(register):
    register(Memory)
