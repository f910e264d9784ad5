"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018, arXiv:1803.02999).

For each task of a meta-batch, train from the current initialisation theta with a few Adam steps on
*different* minibatches of the task, then move theta toward the mean of the adapted weights:
theta <- theta + eps * mean(theta_task - theta), eps annealed linearly from ``meta_step`` to 0. The
update is handed to the shared training loop as the gradient theta - mean(theta_task) with plain SGD.

What the paper's Omniglot runs do, and this module with them (supervised-reptile ``run_omniglot.sh``):
the inner optimiser is Adam with beta1 = 0, its second-moment state carried from task to task and used
at evaluation (TF slot variables are not reset between tasks); training tasks have ``train_shot`` = 10
examples per class, seen in minibatches, so the update contains the gradient inner product between
minibatches that makes Reptile generalise (paper section 5). Full-batch SGD on one small support set
instead, as an earlier version here did, learns nothing useful (about 53% on 5-way 1-shot).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mtbench import FitData, RunContext, Support, hookimpl
from mtbench.train import OptimizerFactory, ScheduleFactory, linear_to_zero

from .functional import InnerLoop, Params, call
from .meta_learner import AdaptedPredictor, GradientMetaLearner


def paper_settings(n_way: int) -> dict[str, Any]:
    """Nichol et al. 2018, Omniglot (supervised-reptile ``run_omniglot.sh``), by number of ways."""
    if n_way >= 20:
        return {"inner_lr": 5e-4, "inner_steps": 10, "inner_batch": 20, "test_inner_steps": 50,
                "test_inner_batch": 10, "meta_batch": 5}
    return {"inner_lr": 1e-3, "inner_steps": 5, "inner_batch": 10, "test_inner_steps": 50,
            "test_inner_batch": 5, "meta_batch": 5}


@dataclass
class InnerAdam:
    """Adam on functional parameters (Kingma & Ba 2015), beta1 = 0 as in Reptile.

    Its ``state`` (step count ``t``, moments ``m`` and ``v`` by parameter name) is a plain dict of tensors and
    numbers, updated in place: Reptile keeps it as fitted state across tasks, and :meth:`copy` gives an
    evaluation episode its own.
    """

    lr: float
    beta1: float = 0.0
    beta2: float = 0.999
    eps: float = 1e-8
    state: dict[str, Any] = field(default_factory=lambda: {"t": 0, "m": {}, "v": {}})

    @property
    def t(self) -> int:
        return self.state["t"]

    @property
    def m(self) -> Params:
        return self.state["m"]

    @property
    def v(self) -> Params:
        return self.state["v"]

    def copy(self) -> "InnerAdam":
        return InnerAdam(self.lr, self.beta1, self.beta2, self.eps,
                         {"t": self.t, "m": {n: x.clone() for n, x in self.m.items()},
                          "v": {n: x.clone() for n, x in self.v.items()}})

    @torch.no_grad()
    def step(self, params: Params, grads: Params) -> Params:
        self.state["t"] += 1
        names = list(grads)
        g = [grads[n] for n in names]
        if not self.v:
            self.state["m"] = {n: torch.zeros_like(x) for n, x in zip(names, g)}
            self.state["v"] = {n: torch.zeros_like(x) for n, x in zip(names, g)}
        m, v = [self.m[n] for n in names], [self.v[n] for n in names]
        if self.beta1 == 0:
            m = g
        else:
            m = torch._foreach_add(torch._foreach_mul(m, self.beta1), g, alpha=1 - self.beta1)
        v = torch._foreach_add(torch._foreach_mul(v, self.beta2), torch._foreach_mul(g, g), alpha=1 - self.beta2)
        self.m.update(zip(names, m))
        self.v.update(zip(names, v))
        scale = self.lr * (1 - self.beta2 ** self.t) ** 0.5 / (1 - self.beta1 ** self.t)
        steps = torch._foreach_div(m, torch._foreach_add(torch._foreach_sqrt(v), self.eps))
        moved = torch._foreach_add([params[n] for n in names], steps, alpha=-scale)
        return {**params, **{n: p.requires_grad_() for n, p in zip(names, moved)}}


class Reptile(GradientMetaLearner):
    name = "reptile"
    citation = "Nichol et al. 2018, arXiv:1803.02999"
    adapt_params = frozenset({"test_inner_steps", "test_inner_batch"})
    constraints = {"meta_iterations": ">= 1", "meta_batch": ">= 1", "inner_lr": "> 0", "inner_steps": ">= 1",
                   "inner_batch": ">= 1", "test_inner_steps": ">= 0", "test_inner_batch": ">= 1", "meta_step": "> 0",
                   "train_shot": ">= 1", "bn": ("transductive", "support"), "validate_every": ">= 0",
                   "val_episodes": ">= 1"}
    # Standard: what about 25 minutes of one CPU core allow (0.17-0.19 s per meta-iteration); paper: 100,000.
    budgets = {"quick": {"meta_iterations": 2000}, "standard": {"meta_iterations": 7000},
               "paper": {"meta_iterations": 100_000}}

    def __init__(self, backbone: str = "conv4-maml", meta_iterations: int = 100_000, meta_batch: int | None = None,
                 inner_lr: float | None = None, inner_steps: int | None = None, inner_batch: int | None = None,
                 test_inner_steps: int | None = None, test_inner_batch: int | None = None, meta_step: float = 1.0,
                 train_shot: int = 10, bn: str = "transductive", validate_every: int = 1000,
                 val_episodes: int = 100) -> None:
        self.backbone = backbone
        self.meta_iterations = meta_iterations
        self.meta_batch = meta_batch
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.inner_batch = inner_batch
        self.test_inner_steps = test_inner_steps
        self.test_inner_batch = test_inner_batch
        self.meta_step = meta_step
        self.train_shot = train_shot
        self.bn = bn
        self.validate_every = validate_every
        self.val_episodes = val_episodes

    def paper_settings(self, n_way: int) -> dict[str, Any]:
        return paper_settings(n_way)

    def batchnorm_mode(self) -> str:
        super().batchnorm_mode()
        return ("batch statistics of each minibatch; queries normalised together (transductive, as in the paper)"
                if self.bn == "transductive" else
                "batch statistics of each minibatch; queries with the support set's (non-transductive)")

    def inner(self) -> InnerLoop:
        """The task loss and how queries are normalised (the step sizes live in the inner Adam)."""
        return InnerLoop(self.loss_function(), 0, 0.0, support_stats=self.bn == "support")

    def init_fitted(self, data: FitData, ctx: RunContext, features: torch.nn.Module | None = None) -> None:
        """The network and the inner Adam's state, which is fitted state too: the paper's code carries it from
        task to task and into evaluation. Kept as a plain dict (step count, moments) so it is stored with
        the fit like any tensor."""
        super().init_fitted(data, ctx, features)
        self.adam_state_: dict[str, Any] = InnerAdam(0.0).state

    def inner_adam(self) -> InnerAdam:
        """The carried inner optimiser; its steps update ``adam_state_`` in place."""
        return InnerAdam(self.settings_["inner_lr"], state=self.adam_state_)

    # -- meta-training ------------------------------------------------------------------------------
    def training_episodes(self, target) -> tuple[int, int]:
        return self.train_shot, 0

    def meta_optimizer(self) -> OptimizerFactory:
        """Plain SGD on theta - mean(theta_task) is Reptile's interpolation step."""
        return lambda groups: torch.optim.SGD(groups, lr=self.meta_step)

    def meta_schedule(self) -> ScheduleFactory:
        return linear_to_zero

    def fit_facts(self) -> dict[str, Any]:
        return {"train_shot": self.train_shot,
                "inner_optimizer": "adam, beta1 0, state carried across tasks and into evaluation"}

    def train_task(self, params: Params, x: torch.Tensor, y: torch.Tensor, adam: InnerAdam, steps: int,
                   batch: int) -> tuple[Params, float]:
        """``steps`` Adam steps on minibatches that walk through a shuffled copy of the task's examples."""
        inner = self.inner()
        fast = {n: p.detach().requires_grad_() for n, p in params.items()}
        batch = min(batch, len(y))
        order = torch.randperm(len(y), device=y.device)
        loss = torch.zeros(())
        for i in range(steps):
            start = (i * batch) % len(y)
            if start + batch > len(y):  # the next pass over the task, in a new order
                order, start = torch.randperm(len(y), device=y.device), 0
            rows = order[start:start + batch]
            loss = inner.loss(call(self.model_, fast, x[rows]), y[rows])
            grads = torch.autograd.grad(loss, list(fast.values()))
            fast = adam.step(fast, dict(zip(fast, grads)))
        return fast, float(loss.detach())

    def meta_gradient(self, params: Params, tasks: list) -> tuple[Params, float]:
        """theta - mean(theta_task) over a meta-batch (an SGD step of size eps on it is Reptile's update),
        and the mean last inner-loop loss."""
        s = self.settings_
        moved = {n: torch.zeros_like(p) for n, p in params.items()}
        total = 0.0
        adam = self.inner_adam()
        for ep in tasks:
            fast, loss = self.train_task(params, ep.support_x, ep.support_y, adam, s["inner_steps"], s["inner_batch"])
            for n in moved:
                moved[n] += params[n].detach() - fast[n].detach()
            total += loss
        return {n: m / len(tasks) for n, m in moved.items()}, total / len(tasks)

    def meta_loss(self, tasks: list) -> torch.Tensor:
        params = dict(self.model_.named_parameters())
        grads, loss = self.meta_gradient(params, tasks)
        for n, p in params.items():
            p.grad = grads[n]
        return torch.tensor(loss)

    def adapt(self, support: Support, ctx: RunContext) -> AdaptedPredictor:
        s = self.settings_
        steps = s["test_inner_steps"] if self.test_inner_steps is None else self.test_inner_steps
        batch = s["test_inner_batch"] if self.test_inner_batch is None else self.test_inner_batch
        params = {n: p.detach() for n, p in self.model_.named_parameters()}
        with torch.enable_grad():
            fast, _ = self.train_task(params, support.x, support.y, self.inner_adam().copy(), steps, batch)
        return AdaptedPredictor(self.model_, {n: p.detach() for n, p in fast.items()}, self.inner(),
                                support.x, self.regression_)


@hookimpl
def register_algorithms(register):
    register(Reptile)
