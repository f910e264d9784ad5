"""Meta-Transfer Learning (Sun, Liu, Chua & Schiele, "Meta-Transfer Learning for Few-Shot Learning",
CVPR 2019, arXiv:1812.02391).

A backbone pretrained on all base classes (the same pretraining as ``finetune``, shared through the cache)
is frozen. Each of its convolution layers gets meta-learned scaling and shifting parameters (SS): per output
channel, the weights are multiplied by Phi_S1 (initialised to 1) and Phi_S2 (initialised to 0) is added to
the bias. The classifier head is adapted to each task by the MAML inner loop (gradient steps on the head
only), and the outer loop meta-learns SS and the head's initialisation through it (second order: the inner
loop on a linear head is cheap). ``hard_tasks=True`` adds the paper's hard-task (HT) meta-batch: the class
each task got most wrong is remembered, and one task per meta-batch is re-sampled from those classes.

A backbone without convolutions (the tests' MLP) gets SS on its linear layers instead.
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtbench import Algorithm, Episode, FitData, LabeledImages, RunContext, Support, fit_loop, hookimpl

from ._common import FrozenEmbedding, HeadPredictor, episodes_on
from .meta_baseline import train_queries, validation_accuracy
from .pretraining import PRETRAIN_BUDGETS, pretrained_encoder


class ScaleShift(nn.Module):
    """A frozen encoder whose convolution (else linear) layers are scaled and shifted per output channel."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        convs = [n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
        self.layers = convs or [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]
        ref = next(encoder.parameters())
        self.scale = nn.ParameterDict({self._key(n): nn.Parameter(torch.ones(self._module(n).weight.shape[0],
                                                                             device=ref.device))
                                       for n in self.layers})
        self.shift = nn.ParameterDict({self._key(n): nn.Parameter(torch.zeros(self._module(n).weight.shape[0],
                                                                              device=ref.device))
                                       for n in self.layers if self._module(n).bias is not None})
        self.out_dim = encoder.out_dim

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "_")

    def _module(self, name: str) -> nn.Module:
        return self.encoder.get_submodule(name)

    def train(self, mode: bool = True) -> "ScaleShift":
        super().train(mode)
        self.encoder.eval()  # the frozen backbone keeps its pretrained BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params: dict[str, torch.Tensor] = {}
        for name in self.layers:
            module, key = self._module(name), self._key(name)
            weight = module.weight
            params[f"{name}.weight"] = weight * self.scale[key].view(-1, *([1] * (weight.ndim - 1)))
            if key in self.shift:
                params[f"{name}.bias"] = module.bias + self.shift[key]
        return functional_call(self.encoder, params, (x,))


def adapt_head(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lr: float, steps: int,
               create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The MAML inner loop on a linear head: ``steps`` gradient steps of size ``lr`` from (weight, bias)."""
    for _ in range(steps):
        loss = F.cross_entropy(F.linear(z, weight, bias), y)
        grad_w, grad_b = torch.autograd.grad(loss, (weight, bias), create_graph=create_graph)
        weight, bias = weight - lr * grad_w, bias - lr * grad_b
    return weight, bias


class HardTasks:
    """Failure classes of recent tasks, and tasks re-sampled from them (Sun et al.'s HT meta-batch)."""

    def __init__(self, data: LabeledImages, n_way: int, k_shot: int, n_query: int, seed: int) -> None:
        self.data, self.n_way, self.k_shot, self.n_query = data, n_way, k_shot, n_query
        self.rng = np.random.default_rng([seed, 0x4854])
        self.failures: list[int] = []
        self.drawn = 0

    def remember(self, episode: Episode, per_class_accuracy: torch.Tensor) -> None:
        worst = int(per_class_accuracy.argmin())
        cls = episode.classes[worst]
        if cls in self.failures:
            self.failures.remove(cls)
        self.failures.append(cls)
        del self.failures[:-4 * self.n_way]  # the most recent failures only

    def draw(self) -> Episode | None:
        if len(self.failures) < self.n_way:
            return None
        classes = self.rng.choice(self.failures, self.n_way, replace=False)
        support, query = [], []
        for cls in classes:
            rows = self.data.class_rows[int(cls)]
            rows = rows[rows >= 0]
            pick = torch.from_numpy(self.rng.choice(len(rows), self.k_shot + self.n_query, replace=False))
            support.append(rows[pick[: self.k_shot]])
            query.append(rows[pick[self.k_shot:]])
        self.drawn += 1
        labels = torch.arange(self.n_way)
        return Episode(self.data.as_float(torch.cat(support)), labels.repeat_interleave(self.k_shot),
                       self.data.as_float(torch.cat(query)), labels.repeat_interleave(self.n_query),
                       tuple(int(c) for c in classes), -self.drawn, 0)


class MTL(FrozenEmbedding, Algorithm):
    name = "mtl"
    kind = "joint"
    citation = "Sun et al. 2019, arXiv:1812.02391"
    budgets = {b: {**PRETRAIN_BUDGETS[b], "meta_iterations": n}
               for b, n in (("quick", 300), ("standard", 3000), ("paper", 15_000))}
    adapt_params = frozenset({"test_inner_steps"})
    constraints = {"pretrain_steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "meta_iterations": ">= 1",
                   "meta_batch": ">= 1", "ss_lr": "> 0", "head_lr": "> 0", "inner_lr": "> 0", "inner_steps": ">= 1",
                   "test_inner_steps": ">= 0", "train_query": ">= 1", "validate_every": ">= 0", "val_episodes": ">= 1"}

    def __init__(self, backbone: str = "conv4", pretrain_steps: int = 10_000, batch_size: int = 128,
                 lr: float = 1e-3, meta_iterations: int = 15_000, meta_batch: int = 2, ss_lr: float = 1e-4,
                 head_lr: float = 1e-3, inner_lr: float = 0.01, inner_steps: int = 100,
                 test_inner_steps: int | None = None, train_query: int = 15, hard_tasks: bool = False,
                 validate_every: int = 100, val_episodes: int = 100) -> None:
        self.backbone = backbone
        self.pretrain_steps = pretrain_steps
        self.batch_size = batch_size
        self.lr = lr
        self.meta_iterations = meta_iterations
        self.meta_batch = meta_batch
        self.ss_lr = ss_lr
        self.head_lr = head_lr
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.train_query = train_query
        self.hard_tasks = hard_tasks
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = ScaleShift(ctx.build_backbone(self.backbone, data.train.shape))
        self.head_ = nn.Linear(self.encoder_.out_dim, data.target.n_way).to(ctx.device)

    def task_loss(self, ep: Episode, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss after the inner loop on the head, and the per-class query accuracy."""
        z = self.encoder_(torch.cat([ep.support_x, ep.query_x]))
        n = len(ep.support_y)
        w, b = adapt_head(z[:n], ep.support_y, self.head_.weight, self.head_.bias, self.inner_lr, self.inner_steps,
                          create_graph)
        logits = F.linear(z[n:], w, b)
        hit = (logits.argmax(1) == ep.query_y).float()
        per_class = torch.zeros(ep.n_way, device=hit.device).index_add_(0, ep.query_y, hit)
        per_class = per_class / torch.bincount(ep.query_y, minlength=ep.n_way).clamp_min(1)
        return F.cross_entropy(logits, ep.query_y), per_class.detach()

    def fit(self, data: FitData, ctx: RunContext) -> "MTL":
        torch.manual_seed(data.seed)
        self.init_fitted(data, ctx)
        pretrained, info = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps, self.batch_size, self.lr)
        info.pop("head", None)
        self.encoder_.encoder.load_state_dict(pretrained.state_dict())
        target = data.target
        query = train_queries(data, self.train_query)
        sampler = data.episodes(target.n_way, target.k_shot, query, seed_offset=5)
        episodes = episodes_on(sampler, ctx)
        hard = HardTasks(data.train, target.n_way, target.k_shot, query, data.seed) if self.hard_tasks \
            else None

        def batches():
            for _ in itertools.count():
                tasks = [next(episodes) for _ in range(self.meta_batch)]
                extra = hard.draw() if hard is not None else None
                yield tasks + ([extra.to(ctx.device)] if extra is not None else [])

        def loss(tasks) -> torch.Tensor:
            total = 0.0
            for ep in tasks:
                value, per_class = self.task_loss(ep)
                if hard is not None and ep.index >= 0:
                    hard.remember(ep, per_class)
                total = total + value
            return total / len(tasks)

        best: dict[str, Any] = {"step": 0, "val_accuracy": None, "state": None}
        calls = [0]

        def validate() -> dict[str, float]:
            """Validation accuracy; the SS parameters and head of the best validated step are kept."""
            step = min(calls[0] * self.validate_every, self.meta_iterations)
            calls[0] += 1
            score = validation_accuracy(self, data, ctx, self.val_episodes)
            if best["val_accuracy"] is None or score > best["val_accuracy"]:
                best.update(step=step, val_accuracy=score, state=copy.deepcopy(
                    {"ss": self.encoder_.state_dict(), "head": self.head_.state_dict()}))
            return {"val_accuracy": score}

        validating = data.val is not None and bool(self.validate_every)
        if validating:
            validate()  # step 0: the pretrained backbone with SS at (1, 0) and the initial head
        groups = [{"params": list(self.encoder_.scale.parameters()) + list(self.encoder_.shift.parameters()),
                   "lr": self.ss_lr},
                  {"params": list(self.head_.parameters()), "lr": self.head_lr}]
        history = fit_loop(loss, batches(), groups, steps=self.meta_iterations, ctx=ctx, lr=self.ss_lr,
                           validate=validate if validating else None, validate_every=self.validate_every,
                           description=f"fit mtl {target.n_way}w{target.k_shot}s")
        if best["state"] is not None:
            self.encoder_.load_state_dict(best["state"]["ss"])
            self.head_.load_state_dict(best["state"]["head"])
        self.fit_info_ = {
            "history": history.as_dict(), "pretrain": info,
            "ss_layers": list(self.encoder_.layers),
            "train_protocol": f"{target.n_way}-way {target.k_shot}-shot {query}-query, {self.meta_batch} tasks per "
                              "meta-batch" + (" + 1 hard task" if self.hard_tasks else ""),
            "inner_loop": f"{self.inner_steps} steps of size {self.inner_lr} on the head (second order)",
            "hard_tasks": {"enabled": self.hard_tasks, "drawn": hard.drawn if hard else 0},
            "selected": {"step": best["step"], "val_accuracy": best["val_accuracy"]},
            "deviations": ["Conv-4 on Omniglot (the paper: ResNet-12 on miniImageNet/FC100)",
                           "Adam for SS (lr 1e-4) and the head's initialisation (lr 1e-3)",
                           "the meta-iteration kept is the best on validation episodes (step 0 included)"],
            "batchnorm": "the frozen backbone's running statistics throughout (non-transductive)",
        }
        return self

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        """The inner loop from the meta-learned head, on the support embeddings (scaled and shifted features)."""
        steps = self.inner_steps if self.test_inner_steps is None else self.test_inner_steps
        z = support.x
        start = (self.head_.weight.detach().requires_grad_(), self.head_.bias.detach().requires_grad_())
        with torch.enable_grad():
            w, b = adapt_head(z, support.y, *start, self.inner_lr, steps, create_graph=False)
        w, b = w.detach(), b.detach()
        return HeadPredictor(lambda q: F.linear(q, w, b))


@hookimpl
def register_algorithms(register):
    register(MTL)
