"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018, arXiv:1803.02999).

For each task of a meta-batch, take ``inner_steps`` SGD steps from the current initialisation theta, then
move theta toward the mean of the adapted weights: theta <- theta + eps * mean(theta_task - theta), with
the meta step size eps annealed linearly to 0. Written as a gradient, theta - mean(theta_task), handed to
the shared training loop's SGD. Adaptation at test time reuses MAML's inner loop.
"""
from __future__ import annotations

import itertools

import torch

from mtbench import FitData, RunContext, fit_loop, hookimpl

from .functional import call, inner_loop
from .maml import MAML


class Reptile(MAML):
    name = "reptile"
    citation = "Nichol et al. 2018, arXiv:1803.02999"
    budgets = {"quick": {"meta_iterations": 300}, "standard": {"meta_iterations": 2500},
               "paper": {"meta_iterations": 100_000}}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 100_000, meta_batch: int = 5,
                 inner_lr: float = 0.1, inner_steps: int = 5, test_inner_steps: int = 10, meta_step: float = 1.0,
                 train_shot: int = 5, bn: str = "transductive", validate_every: int = 250,
                 val_episodes: int = 100) -> None:
        self.backbone = backbone
        self.meta_iterations = meta_iterations
        self.meta_batch = meta_batch
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.meta_step = meta_step
        self.train_shot = train_shot
        self.bn = bn
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    # MAML options the shared machinery (build, inner, adapt) reads; Reptile has no such choices.
    pretrain_steps = 0
    l2sp = inner_l2sp = 0.0

    def fit(self, data: FitData, ctx: RunContext) -> "Reptile":
        self.build(data, ctx)
        target = data.target
        self.settings_ = s = self.settings(target.n_way)
        params = dict(self.model_.named_parameters())
        inner = self.inner(s["inner_lr"], s["inner_steps"])
        sampler = data.episodes(target.n_way, self.train_shot, 0)
        counter = itertools.count()
        batches = ([sampler[next(counter)].to(ctx.device) for _ in range(s["meta_batch"])] for _ in itertools.count())

        def pseudo_gradient(tasks) -> torch.Tensor:
            start = {n: p.detach().requires_grad_() for n, p in params.items()}
            moved = {n: torch.zeros_like(p) for n, p in params.items()}
            loss = 0.0
            for ep in tasks:
                fast = inner_loop(self.model_, start, ep.support_x, ep.support_y, inner, create_graph=False)
                for n in moved:
                    moved[n] += (start[n] - fast[n]).detach()
                with torch.no_grad():
                    loss += float(inner.loss(call(self.model_, fast, ep.support_x), ep.support_y))
            for n, p in params.items():
                p.grad = moved[n] / len(tasks)
            return torch.tensor(loss / len(tasks))

        validate = (lambda: {"val_accuracy": self.validation_score(data, ctx)}) if (
            data.val is not None and self.validate_every) else None
        history = fit_loop(pseudo_gradient, batches, params.values(), steps=self.meta_iterations, ctx=ctx,
                           lr=self.meta_step, optimizer="sgd", momentum=0.0, linear_decay=True, validate=validate,
                           validate_every=self.validate_every,
                           description=f"fit reptile {target.n_way}w{target.k_shot}s")
        self.fit_info_ = {"history": history.as_dict(), "settings": s, "train_shot": self.train_shot,
                          "seconds_per_meta_iteration": round(history.seconds / max(history.steps, 1), 4),
                          "batchnorm": "batch statistics, queries normalised together (transductive)"}
        return self


@hookimpl
def register_algorithms(register):
    register(Reptile)
